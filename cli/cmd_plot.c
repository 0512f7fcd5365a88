/* cmd_plot.c - the command line of `yoke plot` (common's gnuplot helper,
 * yk_plot_train_logs, draws it). */
#include <stddef.h>
#include <stdio.h>

#include "cli.h"

typedef struct plot_opts {
  const char *out, *title;
  yk_args_pos pos;
} plot_opts;

static const yk_opt plot_table[] = {
    {"--out", 'o', YK_OPT_STR, offsetof(plot_opts, out), "FILE.png", "the figure to write (required)"},
    {"--title", 0, YK_OPT_STR, offsetof(plot_opts, title), "T", "the figure's title"},
};

static const yk_cmd_spec plot_spec = {
    .name = "plot",
    .synopsis = "LOG... --out FILE.png [--title T]",
    .about = "Plot training loss, validation loss, learning rate and tokens/s against step (2x2, gnuplot),\n"
             "one curve per LOG: a train.log_file, or the output of `yoke train --json`. The gnuplot\n"
             "script is kept in FILE.png.gp.",
    .opts = plot_table,
    .nopts = YK_ARRAY_LEN(plot_table),
    .min_pos = 1,
    .max_pos = 64,
    .pos_off = offsetof(plot_opts, pos),
};

int cli_cmd_plot(int argc, char **argv) {
  plot_opts o = {0};
  int code = cli_parse(&plot_spec, argc, argv, &o);
  if (code >= 0) return code;
  if (!o.out) {
    fprintf(stderr, "yoke plot: --out FILE.png is required (see yoke plot --help)\n");
    return 2;
  }
  yk_diag d = {0};
  int rc = yk_plot_train_logs((const char *const *)o.pos.v, o.pos.n, o.out, o.title, &d);
  if (rc) {
    fprintf(stderr, "yoke plot: %s\n", yk_diag_msg(&d, rc));
    return 1;
  }
  printf("wrote %s (%d run%s)\n", o.out, o.pos.n, o.pos.n == 1 ? "" : "s");
  return 0;
}
