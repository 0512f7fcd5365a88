/* validate.c - `yoke sim --validate`. */
#include "sim_internal.h"

int yk_sim_validate(const yk_sim_validate_opts *o) {
  fprintf(stderr, "yoke sim --validate: not built yet\n");
  return 1;
}
