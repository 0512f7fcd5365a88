/* model.c - the α-β-γ cost model's constants file, written by
 * `yoke bench coll --calibrate` and read by yk_comm_create (opts.model_file).
 * Format: text lines "key value", keys alpha_us, beta_ns, gamma_ns, shm_gbs;
 * '#' starts a comment. */
#include <stdlib.h>
#include <string.h>

#include "coll_internal.h"

int coll_model_load(const char *path, coll_model *m, yk_diag *d) {
  char *buf = NULL;
  size_t len = 0;
  int rc = yk_file_read(path, &buf, &len, d);
  if (rc) return rc;
  int line = 0;
  for (char *s = strtok(buf, "\n"); s; s = strtok(NULL, "\n")) {
    line++;
    while (*s == ' ' || *s == '\t') s++;
    if (!*s || *s == '#') continue;
    char key[32];
    double v;
    if (sscanf(s, "%31s %lf", key, &v) != 2 || v < 0) {
      rc = yk_errorf(d, YK_EFORMAT, "%s:%d: expected 'key value' with a non-negative number, got '%s'", path, line, s);
      free(buf);
      return rc;
    }
    if (!strcmp(key, "alpha_us")) m->alpha_us = v;
    else if (!strcmp(key, "beta_ns")) m->beta_ns = v;
    else if (!strcmp(key, "gamma_ns")) m->gamma_ns = v;
    else if (!strcmp(key, "shm_gbs")) m->shm_gbs = v;
    else {
      free(buf);
      return yk_errorf(d, YK_EFORMAT, "%s:%d: unknown key '%s' (alpha_us, beta_ns, gamma_ns, shm_gbs)", path, line,
                       key);
    }
  }
  free(buf);
  return 0;
}
