/* cmd_data.c - `yoke data prepare|info`: the command lines of data/'s
 * shard tools. */
#include <stddef.h>
#include <string.h>

#include "cli.h"
#include "yk_data.h"

/* Bad input on the command line (a glob matching nothing, a directory, an
 * option out of range) is a usage error. */
static int exit_code(int rc) { return rc == YK_EINVAL ? 2 : cli_exit_code(rc); }

typedef struct prepare_opts {
  const char *out;
  double val_fraction;
  int64_t shard_tokens;
  int64_t min_tokens;
  const char *tokenizer, *encoder, *bpe;
  yk_args_pos pos;
} prepare_opts;

static const yk_opt prepare_table[] = {
    {"--out", 0, YK_OPT_STR, offsetof(prepare_opts, out), "DIR",
     "output directory (default: data); writes DIR/train_NNN.bin and\n"
     "                            DIR/val_NNN.bin, replacing shards of an earlier run there"},
    {"--val-fraction", 0, YK_OPT_NUM, offsetof(prepare_opts, val_fraction), "F",
     "0 <= F < 1 (default 0.1); 0 writes no val shard"},
    {"--shard-tokens", 0, YK_OPT_INT, offsetof(prepare_opts, shard_tokens), "N",
     "at most N tokens per shard file (default 100000000)", 1, (double)YK_SHARD_MAX_TOKENS},
    {"--min-tokens", 0, YK_OPT_INT, offsetof(prepare_opts, min_tokens), "N",
     "refuse input giving fewer than N train tokens (default: one window of the\n"
     "                            default train.micro_batch x train.seq_len, + 1)", 1, (double)YK_SHARD_MAX_TOKENS},
    {"--tokenizer", 0, YK_OPT_STR, offsetof(prepare_opts, tokenizer), "byte|gpt2",
     "byte (default): token = byte value, vocabulary 256; gpt2: GPT-2's BPE\n"
     "                            (needs --encoder and --bpe), vocabulary 50257"},
    {"--encoder", 0, YK_OPT_STR, offsetof(prepare_opts, encoder), "FILE", "GPT-2's encoder.json (--tokenizer gpt2)"},
    {"--bpe", 0, YK_OPT_STR, offsetof(prepare_opts, bpe), "FILE", "GPT-2's vocab.bpe, its merges (--tokenizer gpt2)"},
};

static const yk_cmd_spec prepare_spec = {
    .name = "data prepare",
    .synopsis = "[--out DIR] [--val-fraction F] [--shard-tokens N] [--min-tokens N]\n"
                "                         [--tokenizer gpt2 --encoder encoder.json --bpe vocab.bpe] FILE|GLOB...",
    .about = "Turn text files into token shards: byte-level (vocabulary 256: token = byte value)\n"
             "for the quick-start models, or GPT-2's BPE (--tokenizer gpt2). Files are sorted by path\n"
             "and read once each (symlinked duplicates are skipped); every document starts with a\n"
             "separator (token 0, or GPT-2's <|endoftext|>), and the last fraction F of every\n"
             "document's tokens goes to the validation split.",
    .opts = prepare_table,
    .nopts = YK_ARRAY_LEN(prepare_table),
    .min_pos = 1,
    .max_pos = 1 << 30,
    .pos_off = offsetof(prepare_opts, pos),
    .epilog = "Quoted globs are expanded by yoke, e.g.\n"
              "  yoke data prepare --out data/licenses '/usr/share/common-licenses/*'\n",
};

static int cmd_prepare(int argc, char **argv) {
  yk_data_prepare_opts lo;
  yk_data_prepare_opts_default(&lo);
  prepare_opts o = {
      .out = lo.out, .val_fraction = lo.val_fraction, .shard_tokens = lo.shard_tokens, .min_tokens = lo.min_tokens};
  int code = cli_parse(&prepare_spec, argc, argv, &o);
  if (code >= 0) return code;
  if (!(o.val_fraction >= 0 && o.val_fraction < 1)) {
    fprintf(stderr, "yoke data prepare: --val-fraction '%g' must be a number in [0, 1)\n", o.val_fraction);
    return 2;
  }
  lo.out = o.out;
  lo.val_fraction = o.val_fraction;
  lo.shard_tokens = o.shard_tokens;
  lo.min_tokens = o.min_tokens;
  lo.inputs = o.pos.v;
  lo.ninputs = o.pos.n;
  yk_data_prepare_result r;
  yk_diag d = {0};
  yk_tokenizer *tk = NULL;
  int gpt2 = o.tokenizer && !strcmp(o.tokenizer, "gpt2");
  if (o.tokenizer && !gpt2 && strcmp(o.tokenizer, "byte")) {
    fprintf(stderr, "yoke data prepare: --tokenizer '%s' is not known; use byte or gpt2\n", o.tokenizer);
    return 2;
  }
  if (gpt2 != (o.encoder || o.bpe) || (gpt2 && !(o.encoder && o.bpe))) {
    fprintf(stderr, "yoke data prepare: --tokenizer gpt2 goes with both --encoder encoder.json and --bpe vocab.bpe "
                    "(GPT-2's files)\n");
    return 2;
  }
  if (gpt2) {
    int trc = yk_data_tokenizer_load_gpt2(o.encoder, o.bpe, &tk, &d);
    if (trc) {
      fprintf(stderr, "yoke data prepare: %s\n", yk_diag_msg(&d, trc));
      return 1;
    }
    lo.tokenizer = tk;
  }
  int rc = yk_data_prepare(&lo, &r, &d);
  int vocab = tk ? yk_data_tokenizer_vocab_size(tk) : YK_DATA_BYTE_VOCAB;
  yk_data_tokenizer_destroy(tk);
  if (rc) {
    fprintf(stderr, "yoke data prepare: %s\n", yk_diag_msg(&d, rc));
    return exit_code(rc);
  }
  printf("read %zu files, %zu bytes", r.files, r.bytes);
  if (r.duplicates) printf(" (%zu duplicate path%s skipped)", r.duplicates, r.duplicates == 1 ? "" : "s");
  printf("\ntrain: %zu tokens in %d shard%s: %s/train_*.bin\n", r.train_tokens, r.train_shards,
         r.train_shards == 1 ? "" : "s", lo.out);
  if (r.val_shards)
    printf("val: %zu tokens in %d shard%s: %s/val_*.bin\n", r.val_tokens, r.val_shards, r.val_shards == 1 ? "" : "s",
           lo.out);
  else printf("val: none (--val-fraction 0 or documents too short)\n");
  printf("vocabulary: %d (%s)\n", vocab, gpt2 ? "GPT-2 BPE" : "byte-level");
  return 0;
}

typedef struct info_opts {
  int64_t vocab;
  yk_args_pos pos;
} info_opts;

static const yk_opt info_table[] = {
    {"--vocab", 0, YK_OPT_INT, offsetof(info_opts, vocab), "V",
     "also require every token id < V (the model's vocabulary size)", 1, 65536},
};

static const yk_cmd_spec info_spec = {
    .name = "data info",
    .synopsis = "[--vocab V] SHARD|GLOB...",
    .about = "Check token shards and print, per file: token count, largest token id and,\n"
             "for byte-level shards, the first bytes as text. Exit 1 if any shard is bad.",
    .opts = info_table,
    .nopts = YK_ARRAY_LEN(info_table),
    .min_pos = 1,
    .max_pos = 1 << 30,
    .pos_off = offsetof(info_opts, pos),
};

static int cmd_info(int argc, char **argv) {
  info_opts o = {0};
  int code = cli_parse(&info_spec, argc, argv, &o);
  if (code >= 0) return code;
  yk_data_info_opts lo = {.vocab = o.vocab, .inputs = o.pos.v, .ninputs = o.pos.n};
  yk_diag d = {0};
  int rc = yk_data_info_print(&lo, stdout, &d);
  if (rc) fprintf(stderr, "yoke data info: %s\n", yk_diag_msg(&d, rc));
  return exit_code(rc);
}

static const cli_cmd data_cmds[] = {
    {"prepare", cmd_prepare, "turn text files into byte-level train/val token shards"},
    {"info", cmd_info, "check token shards and show their size and first tokens"},
};

int cli_cmd_data(int argc, char **argv) {
  return cli_dispatch("yoke data", "action", data_cmds, YK_ARRAY_LEN(data_cmds), argc, argv);
}
