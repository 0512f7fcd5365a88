/* cli.h - private to cli/: the pieces every `yoke` subcommand file shares.
 * Each subcommand parses its argv with one yk_cmd_spec (yk_args_parse) and
 * calls its module's library function with the options struct it filled. */
#ifndef YK_CLI_H
#define YK_CLI_H

#include "yk_common.h"

typedef int (*cli_fn)(int argc, char **argv);

/* The option row every command with a job config has: --set section.key=value. */
#define CLI_SET_OPT {"--set", 0, YK_OPT_CONFIG, 0, "SECTION.KEY=VALUE", "override any config key (repeatable)"}

/* One entry of a command table: `yoke NAME`, `yoke ckpt NAME`, ... */
typedef struct cli_cmd {
  const char *name;
  cli_fn fn;
  const char *summary;
} cli_cmd;

/* Run the command argv[1] of the table with argv + 1 (its own argv[0] is its
 * name). group is what comes before it ("yoke", "yoke ckpt"), what names an
 * entry ("command", "action", "benchmark"). -h/--help lists the table on
 * stdout (exit 0); no command or an unknown one lists it on stderr (exit 2)
 * after "GROUP: unknown WHAT 'x'". */
int cli_dispatch(const char *group, const char *what, const cli_cmd *cmds, int n, int argc, char **argv);

/* Parse argv with s into opts: -1 to go on, else the exit code (0 after
 * printing --help, 2 after printing the error). */
int cli_parse(const yk_cmd_spec *s, int argc, char **argv, void *opts);

/* The exit code of a library error: YK_EUSAGE and YK_ECONFIG 2, others 1. */
int cli_exit_code(int rc);

/* The GPT-2 config of a checkpoint's f32 parameter arena `arena` (its
 * tensor table and the manifest's vocab_size and heads; under tensor
 * parallelism of its pieces "arena.tpKofN"), for exporting or sampling from
 * it (cmd_ckpt.c). */
struct yk_ckpt_reader;
struct yk_model_config;
int cli_ckpt_gpt2_config(struct yk_ckpt_reader *r, const char *arena, struct yk_model_config *out, yk_diag *d);
/* Read that whole arena (config from cli_ckpt_gpt2_config) into dst
 * (yk_model_config_num_params floats); under tensor parallelism every
 * rank's pieces put in their places (yk_model_tp_copy). */
int cli_ckpt_gpt2_read(struct yk_ckpt_reader *r, const char *arena, const struct yk_model_config *cfg, float *dst,
                       yk_diag *d);

/* The subcommands, one file each. */
int cli_cmd_train(int argc, char **argv);
int cli_cmd_eval(int argc, char **argv);
int cli_cmd_ckpt(int argc, char **argv);
int cli_cmd_data(int argc, char **argv);
int cli_cmd_bench(int argc, char **argv);
int cli_cmd_coord(int argc, char **argv);
int cli_cmd_launch(int argc, char **argv);
int cli_cmd_status(int argc, char **argv);
int cli_cmd_selftest(int argc, char **argv);
int cli_cmd_trace(int argc, char **argv);
int cli_cmd_weights(int argc, char **argv);
int cli_cmd_plot(int argc, char **argv);
int cli_cmd_sample(int argc, char **argv);
int cli_cmd_sim(int argc, char **argv);
int cli_cmd_plan(int argc, char **argv);

#endif
