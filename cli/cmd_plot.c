/* cmd_plot.c - `yoke plot` (placeholder until the plot helper lands). */
#include "cli.h"

int cli_cmd_plot(int argc, char **argv) {
  (void)argc;
  (void)argv;
  return 2;
}
