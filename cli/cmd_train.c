/* cmd_train.c - the command lines of `yoke train` (daemon/train.c runs it)
 * and `yoke eval` (the engine's yk_engine_eval_file). */
#include <stddef.h>
#include <stdio.h>

#include "cli.h"
#include "yk_daemon.h"
#include "yk_engine.h"

/* ---- train ---- */

/* Everything but --json is a config key. */
typedef struct train_opts {
  yk_config cfg;
  int json;
  const char *join;
} train_opts;

static const yk_opt train_table[] = {
    CLI_SET_OPT,
    {"--steps", 0, YK_OPT_CONFIG, 0, "N", "same as --set train.steps=N", .key = "train.steps"},
    {"--init-weights", 0, YK_OPT_CONFIG, 0, "FILE", "start from a GPT-2 fp32 weights file or a Hugging Face\n                            GPT-2 model.safetensors (train.init_weights)",
     .key = "train.init_weights"},
    {"--save-weights", 0, YK_OPT_CONFIG, 0, "FILE", "write a GPT-2 fp32 weights file at the end, or safetensors\n                            when FILE ends in .safetensors (train.save_weights)",
     .key = "train.save_weights"},
    {"--resume", 0, YK_OPT_CONFIG, 0, "latest|PATH",
     "resume from the newest checkpoint in ckpt.dir, or from a checkpoint\n"
     "                            directory (same as --set ckpt.resume=...; needs ckpt.dir). With\n"
     "                            'latest' and no checkpoint yet the run starts at step 0. Checkpoints:\n"
     "                            ckpt.dir, ckpt.every (steps), ckpt.keep; SIGTERM/SIGUSR1 checkpoint at\n"
     "                            the next step boundary and exit 75 (requeue)",
     .key = "ckpt.resume"},
    {"--json", 0, YK_OPT_FLAG, offsetof(train_opts, json), NULL, "also print one JSON object per step and a summary line"},
    {"--join", 0, YK_OPT_STR, offsetof(train_opts, join), "HOST:PORT",
     "join the running elastic job whose coordinator listens at HOST:PORT\n"
     "                            (the job secret in YOKE_SECRET or coord.secret_file); it takes this\n"
     "                            rank in at its next step boundary (docs/elasticity.md)"},
};

static const yk_cmd_spec train_spec = {
    .name = "train",
    .synopsis = "[JOB.yaml] [options]",
    .about = "Train a GPT on this rank. Settings come from the job file (every key is in\n"
             "cluster-configs/reference.yaml), then from the options below.",
    .opts = train_table,
    .nopts = YK_ARRAY_LEN(train_table),
    .job_positional = 1,
    .has_config = 1,
    .cfg_off = offsetof(train_opts, cfg),
};

int cli_cmd_train(int argc, char **argv) {
  train_opts o = {0};
  int code = cli_parse(&train_spec, argc, argv, &o);
  if (code >= 0) return code;
  if (!o.cfg.data.train[0]) {
    fprintf(stderr, "yoke train: no training data: set data.train in the job file or --set data.train=PATH "
                    "(make shards with 'yoke data prepare')\n");
    return 2;
  }
  yk_daemon_train_opts t = {.cfg = &o.cfg, .json = o.json, .join = o.join};
  return yk_daemon_train(&t);
}

/* ---- eval ---- */

typedef struct eval_opts {
  yk_engine_eval_opts e;
  int json;
} eval_opts;

static const yk_opt eval_table[] = {
    {"--weights", 0, YK_OPT_STR, offsetof(eval_opts, e.weights), "FILE", "GPT-2 fp32 weights file (required)"},
    {"--data", 0, YK_OPT_STR, offsetof(eval_opts, e.data), "PATTERN", "token shard file or glob (required)"},
    {"--batch", 0, YK_OPT_INT, offsetof(eval_opts, e.batch), "B", "sequences per batch (default 4)", 1, 1000000},
    {"--seq-len", 0, YK_OPT_INT, offsetof(eval_opts, e.seq_len), "T",
     "tokens per sequence (default 64, at most the model's maxT)", 1, 1000000},
    {"--batches", 0, YK_OPT_INT, offsetof(eval_opts, e.batches), "N",
     "batches to average (default 8; fewer if the data is shorter)", 1, 1000000},
    {"--threads", 0, YK_OPT_INT, offsetof(eval_opts, e.threads), "N", "compute threads (default 0: all cores)", 0,
     1000000},
    {"--json", 0, YK_OPT_FLAG, offsetof(eval_opts, json), NULL, "last line is a JSON object with loss, batches, tokens"},
};

static const yk_cmd_spec eval_spec = {
    .name = "eval",
    .synopsis = "--weights FILE --data SHARDS [options]",
    .about = "Mean cross-entropy loss of a GPT-2 weights file on token shards.",
    .opts = eval_table,
    .nopts = YK_ARRAY_LEN(eval_table),
};

int cli_cmd_eval(int argc, char **argv) {
  eval_opts o = {.e = {.batch = 4, .seq_len = 64, .batches = 8, .threads = 0}};
  int code = cli_parse(&eval_spec, argc, argv, &o);
  if (code >= 0) return code;
  if (!o.e.weights || !o.e.data) {
    fprintf(stderr, "yoke eval: %s is required (see yoke eval --help)\n", !o.e.weights ? "--weights" : "--data");
    return 2;
  }
  yk_logger log;
  yk_logger_init(&log, -1, YK_LOG_INFO, stderr);
  yk_diag d = {0};
  double mean = 0;
  uint64_t n = 0;
  int rc = yk_engine_eval_file(&o.e, &mean, &n, &d);
  if (rc) {
    YK_ERROR(&log, "%s", yk_diag_msg(&d, rc));
    return rc == YK_ECONFIG || rc == YK_ENOTFOUND ? 2 : 1; /* damaged weights or data: 1, docs/exit-codes.md */
  }
  printf("eval: loss %.6f over %llu batches of %lld x %lld tokens\n", mean, (unsigned long long)n,
         (long long)o.e.batch, (long long)o.e.seq_len);
  if (o.json)
    printf("{\"loss\": %.6f, \"batches\": %llu, \"tokens\": %llu}\n", mean, (unsigned long long)n,
           (unsigned long long)(n * (uint64_t)(o.e.batch * o.e.seq_len)));
  return 0;
}
