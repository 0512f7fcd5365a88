/* cmd_sample.c - `yoke sample`: text from a GPT-2 weights file or a
 * checkpoint. Joins a tokenizer (data/) to the model's KV-cache generation
 * (model/generate.c); a checkpoint's parameter arena is read straight into
 * the model (its config as `ckpt convert --export-gpt2` derives it). */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "yk_ckpt.h"
#include "yk_data.h"
#include "yk_model.h"

typedef struct sample_opts {
  const char *weights, *ckpt, *prompt, *tokenizer, *tokenizer_file, *encoder, *bpe;
  int64_t tokens, top_k, seed, threads;
  double temperature;
  int quiet;
} sample_opts;

static const yk_opt sample_table[] = {
    {"--weights", 0, YK_OPT_STR, offsetof(sample_opts, weights), "FILE", "GPT-2 fp32 weights file (llm.c format)"},
    {"--ckpt", 0, YK_OPT_STR, offsetof(sample_opts, ckpt), "DIR",
     "checkpoint directory DIR/step-N, or a checkpoint root (its newest)"},
    {"--prompt", 0, YK_OPT_STR, offsetof(sample_opts, prompt), "TEXT",
     "text to continue (default: empty = start of a document)"},
    {"--tokens", 'n', YK_OPT_INT, offsetof(sample_opts, tokens), "N", "tokens to generate (required, >= 1)"},
    {"--temperature", 0, YK_OPT_NUM, offsetof(sample_opts, temperature), "T",
     "softmax temperature (default 1; 0 = greedy)"},
    {"--top-k", 0, YK_OPT_INT, offsetof(sample_opts, top_k), "K", "draw only from the K likeliest tokens (default 0: all)",
     0, 1 << 24},
    {"--seed", 0, YK_OPT_INT, offsetof(sample_opts, seed), "S", "random seed (default 1337): same seed, same text", 0,
     9007199254740991.0},
    {"--tokenizer", 0, YK_OPT_STR, offsetof(sample_opts, tokenizer), "byte|gpt2",
     "byte (default, the quick-start models) or gpt2 (with --tokenizer-file,\n"
     "                            or --encoder and --bpe)"},
    {"--tokenizer-file", 0, YK_OPT_STR, offsetof(sample_opts, tokenizer_file), "FILE",
     "llm.c's gpt2_tokenizer.bin (decodes; a prompt then needs --encoder/--bpe)"},
    {"--encoder", 0, YK_OPT_STR, offsetof(sample_opts, encoder), "FILE", "GPT-2's encoder.json"},
    {"--bpe", 0, YK_OPT_STR, offsetof(sample_opts, bpe), "FILE", "GPT-2's vocab.bpe"},
    {"--threads", 0, YK_OPT_INT, offsetof(sample_opts, threads), "N", "compute threads (default 0: all cores)", 0, 1024},
    {"--quiet", 'q', YK_OPT_FLAG, offsetof(sample_opts, quiet), NULL, "no summary line on stderr"},
};

static const yk_cmd_spec sample_spec = {
    .name = "sample",
    .synopsis = "(--weights FILE | --ckpt DIR) --tokens N [--prompt TEXT] [--temperature T] [--top-k K]\n"
                "                   [--seed S] [--tokenizer byte|gpt2 [--tokenizer-file FILE | --encoder FILE --bpe FILE]]",
    .about = "Print the prompt and N generated tokens. Each token costs one position (a KV cache). Past the\n"
             "model's max_seq_len the context slides: the cache is rebuilt from the last max_seq_len/2 tokens.\n"
             "Generation stops early at an end-of-text token (byte 0 for the byte tokenizer). See\n"
             "docs/sampling.md.",
    .opts = sample_table,
    .nopts = YK_ARRAY_LEN(sample_table),
    .epilog = "Examples:\n"
              "  yoke sample --weights model.bin --prompt 'The ' --tokens 200 --seed 1\n"
              "  yoke sample --ckpt ckpt/ --tokens 100 --temperature 0.8 --top-k 40\n"
              "  yoke sample --weights gpt2_124M.bin --tokenizer gpt2 --encoder encoder.json --bpe vocab.bpe \\\n"
              "      --prompt 'Hello, I am' --tokens 40\n",
};

static int load_tokenizer(const sample_opts *o, yk_tokenizer **tk, yk_diag *d) {
  const char *kind = o->tokenizer ? o->tokenizer : "byte";
  if (!strcmp(kind, "byte")) {
    if (o->tokenizer_file || o->encoder || o->bpe)
      return yk_errorf(d, YK_EUSAGE, "--tokenizer-file, --encoder and --bpe go with --tokenizer gpt2");
    return yk_data_tokenizer_byte(tk, d);
  }
  if (strcmp(kind, "gpt2"))
    return yk_errorf(d, YK_EUSAGE, "--tokenizer '%s' is not known; use byte or gpt2", kind);
  if (o->encoder && o->bpe) return yk_data_tokenizer_load_gpt2(o->encoder, o->bpe, tk, d);
  if (o->encoder || o->bpe)
    return yk_errorf(d, YK_EUSAGE, "--%s is given without --%s; GPT-2's encoder.json and vocab.bpe go together",
                     o->encoder ? "encoder" : "bpe", o->encoder ? "bpe" : "encoder");
  if (!o->tokenizer_file)
    return yk_errorf(d, YK_EUSAGE, "--tokenizer gpt2 needs its files: --tokenizer-file gpt2_tokenizer.bin, or "
                     "--encoder encoder.json --bpe vocab.bpe");
  return yk_data_tokenizer_load_bin(o->tokenizer_file, tk, d);
}

/* A model with B=1, T=1 (generation runs through the KV cache, not the
 * training forward) holding the weights of the file or the checkpoint. */
static int load_model(const sample_opts *o, const yk_device *dev, yk_model **m, yk_diag *d) {
  yk_model_config cfg;
  int rc;
  if (o->weights) {
    if ((rc = yk_model_weights_read_config(o->weights, &cfg, d))) return rc;
    if ((rc = yk_model_create(&cfg, 1, 1, dev, m, d))) return rc;
    return yk_model_weights_load(*m, o->weights, d);
  }
  yk_ckpt_open_opts oo = {.verify = YK_CKPT_VERIFY_META};
  yk_ckpt_reader *r;
  if ((rc = yk_ckpt_reader_open(o->ckpt, &oo, &r, d))) return rc;
  if (!(rc = cli_ckpt_gpt2_config(r, "params", &cfg, d)) && !(rc = yk_model_create(&cfg, 1, 1, dev, m, d)))
    rc = cli_ckpt_gpt2_read(r, "params", &cfg, yk_model_params(*m), d);
  yk_ckpt_reader_close(r);
  return rc;
}

typedef struct emit_ctx {
  const yk_tokenizer *tk;
  int eot;
  int stopped; /* the end-of-text token ended the sample */
} emit_ctx;

static int emit(void *ctx, int32_t tok, yk_diag *d) {
  emit_ctx *e = ctx;
  if (tok == e->eot) {
    e->stopped = 1;
    return 1;
  }
  const char *b;
  size_t n;
  int rc = yk_data_tokenizer_decode(e->tk, tok, &b, &n, d);
  if (rc) return rc;
  fwrite(b, 1, n, stdout);
  fflush(stdout); /* text appears as it is made */
  return 0;
}

int cli_cmd_sample(int argc, char **argv) {
  sample_opts o = {.temperature = 1.0, .seed = 1337, .tokens = INT64_MIN}; /* INT64_MIN: not given */
  int code = cli_parse(&sample_spec, argc, argv, &o);
  if (code >= 0) return code;
  if (!!o.weights + !!o.ckpt != 1) {
    fprintf(stderr, "yoke sample: give exactly one of --weights FILE and --ckpt DIR (see yoke sample --help)\n");
    return 2;
  }
  if (o.tokens < 1) {
    if (o.tokens == INT64_MIN) fprintf(stderr, "yoke sample: --tokens N is required: how many tokens to generate (N >= 1)\n");
    else fprintf(stderr, "yoke sample: --tokens %lld: give a number of tokens to generate >= 1\n", (long long)o.tokens);
    return 2;
  }
  if (o.tokens > (1 << 24)) {
    fprintf(stderr, "yoke sample: --tokens %lld is more than 16777216; generate less at a time\n", (long long)o.tokens);
    return 2;
  }
  if (!(o.temperature >= 0 && o.temperature <= 1e6)) {
    fprintf(stderr, "yoke sample: --temperature %g must be a number in [0, 1e6] (0: greedy)\n", o.temperature);
    return 2;
  }
  yk_diag d = {0};
  yk_tokenizer *tk = NULL;
  yk_device *dev = NULL;
  yk_model *m = NULL;
  yk_model_kv *kv = NULL;
  int32_t *prompt = NULL;
  size_t np = 0;
  const char *ptext = o.prompt ? o.prompt : "";
  int rc = load_tokenizer(&o, &tk, &d);
  if (!rc && ptext[0] && !yk_data_tokenizer_can_encode(tk))
    rc = yk_errorf(&d, YK_EUSAGE, "a prompt needs encoding, which %s cannot do; add --encoder encoder.json --bpe "
                   "vocab.bpe, or leave --prompt out", o.tokenizer_file);
  if (!rc && ptext[0]) rc = yk_data_tokenizer_encode(tk, ptext, strlen(ptext), &prompt, &np, &d);
  int eot = rc ? -1 : yk_data_tokenizer_eot(tk);
  if (!rc && np == 0) { /* no prompt: start a document, as after a separator in the shards */
    if (eot < 0)
      rc = yk_errorf(&d, YK_EUSAGE, "the prompt is empty and the %s tokenizer has no end-of-text token to start from; "
                     "give --prompt TEXT", yk_data_tokenizer_name(tk));
    else if (!(prompt = malloc(sizeof *prompt))) rc = yk_errorf(&d, YK_ENOMEM, "out of memory");
    else prompt[np++] = eot;
  }
  if (!rc) rc = yk_device_cpu_create((int)o.threads, YK_ISA_AUTO, &dev, &d);
  if (!rc) rc = load_model(&o, dev, &m, &d);
  int V = rc ? 0 : yk_model_get_config(m)->vocab_size;
  if (!rc && V > yk_data_tokenizer_vocab_size(tk))
    rc = yk_errorf(&d, YK_EUSAGE, "the model's vocabulary (%d tokens) is larger than the %s tokenizer's (%d); give the "
                   "tokenizer the model was trained with (--tokenizer gpt2 for GPT-2)", V, yk_data_tokenizer_name(tk),
                   yk_data_tokenizer_vocab_size(tk));
  for (size_t i = 0; !rc && i < np; i++)
    if (prompt[i] >= V)
      rc = yk_errorf(&d, YK_EUSAGE, "the prompt's token %d (position %zu) is outside the model's vocabulary [0, %d); "
                     "use the tokenizer the model was trained with", prompt[i], i, V);
  if (!rc) rc = yk_model_kv_create(m, &kv, &d);
  if (!rc && np > (size_t)(1 << 24)) rc = yk_errorf(&d, YK_EUSAGE, "the prompt has %zu tokens; give at most 16777216", np);
  if (!rc) {
    fwrite(ptext, 1, strlen(ptext), stdout);
    emit_ctx e = {.tk = tk, .eot = eot};
    yk_model_sample_opts so = {.temperature = (float)o.temperature, .top_k = (int)o.top_k, .seed = (uint64_t)o.seed};
    yk_model_generate_stats st;
    double t0 = yk_now_s();
    rc = yk_model_generate(kv, prompt, (int)np, (int)o.tokens, &so, emit, &e, &st, &d);
    double dt = yk_now_s() - t0;
    printf("\n");
    fflush(stdout); /* before the summary on stderr, so a terminal shows them in order */
    if (!rc && !o.quiet) {
      fprintf(stderr, "sampled %d tokens after a %zu-token prompt in %.2f s (%.1f tokens/s; seed %lld, temperature %g, "
              "top-k %lld)", st.generated - e.stopped, np, dt, dt > 0 ? st.generated / dt : 0.0, (long long)o.seed,
              o.temperature, (long long)o.top_k);
      if (e.stopped) fprintf(stderr, "; stopped at the end-of-text token");
      if (st.prompt_dropped) fprintf(stderr, "; the prompt's first %d tokens were beyond max_seq_len", st.prompt_dropped);
      if (st.slides) fprintf(stderr, "; context window slid %d times", st.slides);
      fprintf(stderr, "\n");
    }
  }
  if (rc) fprintf(stderr, "yoke sample: %s\n", yk_diag_msg(&d, rc));
  yk_model_kv_destroy(kv);
  yk_model_destroy(m);
  if (dev) yk_device_destroy(dev);
  yk_data_tokenizer_destroy(tk);
  free(prompt);
  return cli_exit_code(rc);
}
