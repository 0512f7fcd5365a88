/* prepare.c - `yoke data prepare`: text files -> token shards (byte-level,
 * or GPT-2 BPE with a tokenizer from tokenizer.c);
 * `yoke data info`: what shards hold. (Their command lines are in cli/.)
 *
 * Deterministic: inputs are expanded, sorted byte-wise by path, and files
 * reached twice (symlinks such as common-licenses/GPL -> GPL-3, hard links)
 * are read once. Each document is encoded whole and contributes, to train,
 * the separator (token 0 for bytes: byte NUL never occurs in text; GPT-2's
 * <|endoftext|>, as llm.c's shards) followed by its first n - floor(n * F)
 * tokens and, to val, the separator followed by its last floor(n * F)
 * tokens (when that is non-zero); for bytes, tokens are bytes. Splitting every document
 * keeps train and val from the same distribution without sharing text. */
#include "yk_data.h"

#include <dirent.h>
#include <errno.h>
#include <glob.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

typedef struct {
  uint16_t *v;
  size_t n, cap;
} tokbuf;

static int tok_push(tokbuf *b, const uint16_t *t, size_t n) {
  if (b->n + n > b->cap) {
    size_t cap = b->cap ? b->cap : 65536;
    while (cap < b->n + n) cap *= 2;
    uint16_t *nv = realloc(b->v, cap * sizeof *nv);
    if (!nv) return YK_ENOMEM;
    b->v = nv;
    b->cap = cap;
  }
  memcpy(b->v + b->n, t, n * sizeof *t);
  b->n += n;
  return 0;
}

/* A document's tokens after the separator token sep. */
static int push_doc(tokbuf *b, uint16_t sep, const int32_t *tok, size_t n) {
  if (tok_push(b, &sep, 1)) return YK_ENOMEM;
  uint16_t tmp[4096];
  for (size_t i = 0; i < n; i += 4096) {
    size_t k = YK_MIN((size_t)4096, n - i);
    for (size_t j = 0; j < k; j++) tmp[j] = (uint16_t)tok[i + j]; /* ids < 65536: the loaders check */
    if (tok_push(b, tmp, k)) return YK_ENOMEM;
  }
  return 0;
}

typedef struct {
  char **v;
  size_t n, cap;
} strlist;

static int list_add(strlist *l, const char *s) {
  if (l->n == l->cap) {
    size_t cap = l->cap ? 2 * l->cap : 64;
    char **nv = realloc(l->v, cap * sizeof *nv);
    if (!nv) return YK_ENOMEM;
    l->v = nv;
    l->cap = cap;
  }
  if (!(l->v[l->n] = strdup(s))) return YK_ENOMEM;
  l->n++;
  return 0;
}

static void list_free(strlist *l) {
  for (size_t i = 0; i < l->n; i++) free(l->v[i]);
  free(l->v);
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* Delete DIR/<split>_NNN.bin from an earlier run, so a glob over the output
 * never mixes runs. Returns the count removed, or < 0. */
static int remove_old_shards(const char *dir, const char *split, yk_diag *d) {
  char pat[2048];
  snprintf(pat, sizeof pat, "%s/%s_[0-9][0-9][0-9]*.bin", dir, split);
  glob_t g;
  int grc = glob(pat, 0, NULL, &g);
  if (grc == GLOB_NOMATCH) return 0;
  if (grc != 0) return yk_errorf(d, YK_EIO, "cannot list old shards %s", pat);
  int n = 0;
  for (size_t i = 0; i < g.gl_pathc; i++) {
    if (unlink(g.gl_pathv[i]) != 0) {
      int rc = yk_errorf_sys(d, YK_EIO, "cannot remove old shard %s", g.gl_pathv[i]);
      globfree(&g);
      return rc;
    }
    n++;
  }
  globfree(&g);
  return n;
}

static int write_split(const char *dir, const char *split, const tokbuf *b, uint64_t per_shard, int *nshards,
                       yk_diag *d) {
  *nshards = 0;
  for (uint64_t off = 0; off < b->n; off += per_shard) {
    uint64_t n = YK_MIN(per_shard, (uint64_t)b->n - off);
    char path[2048];
    snprintf(path, sizeof path, "%s/%s_%03d.bin", dir, split, *nshards);
    int rc = yk_data_shard_write(path, b->v + off, n, d);
    if (rc) return rc;
    (*nshards)++;
  }
  return 0;
}

typedef struct {
  dev_t dev;
  ino_t ino;
} fileid;

void yk_data_prepare_opts_default(yk_data_prepare_opts *o) {
  memset(o, 0, sizeof *o);
  o->out = "data";
  o->val_fraction = 0.1;
  o->shard_tokens = 100000000;
  /* Shards too small for the default job's first batch are refused here, at
   * the tool that made them, not at `yoke train`'s loader later. */
  yk_config c;
  yk_config_defaults(&c);
  o->min_tokens = c.train.micro_batch * c.train.seq_len + 1;
}

int yk_data_prepare(const yk_data_prepare_opts *o, yk_data_prepare_result *res, yk_diag *d) {
  memset(res, 0, sizeof *res);
  if (!(o->val_fraction >= 0 && o->val_fraction < 1))
    return yk_errorf(d, YK_EINVAL, "val fraction %g must be a number in [0, 1)", o->val_fraction);
  if (o->shard_tokens < 1 || (uint64_t)o->shard_tokens > YK_SHARD_MAX_TOKENS)
    return yk_errorf(d, YK_EINVAL, "tokens per shard %lld must be an integer in [1, %llu]", (long long)o->shard_tokens,
                     YK_SHARD_MAX_TOKENS);
  if (o->ninputs < 1) return yk_errorf(d, YK_EINVAL, "no input files given");
  yk_tokenizer *own = NULL;
  const yk_tokenizer *tk = o->tokenizer;
  if (!tk) {
    int brc = yk_data_tokenizer_byte(&own, d);
    if (brc) return brc;
    tk = own;
  }
  /* the document separator: byte 0 (never in text) or GPT-2's <|endoftext|> */
  int eot = yk_data_tokenizer_eot(tk);
  uint16_t sep = (uint16_t)eot;
  if (!yk_data_tokenizer_can_encode(tk) || yk_data_tokenizer_vocab_size(tk) > 65536 || eot < 0) {
    yk_data_tokenizer_destroy(own);
    return yk_errorf(d, YK_EINVAL, "the %s tokenizer cannot make shards (it needs to encode, ids below 65536 and an "
                     "<|endoftext|> token); give GPT-2's encoder.json and vocab.bpe", yk_data_tokenizer_name(tk));
  }
  strlist files = {0};
  int rc = 0;
  /* expand globs; directories matched by a glob are skipped, named ones are an error */
  for (int i = 0; i < o->ninputs && !rc; i++) {
    const char *a = o->inputs[i];
    if (strpbrk(a, "*?[")) {
      glob_t g;
      int grc = glob(a, GLOB_MARK, NULL, &g);
      if (grc == GLOB_NOMATCH) {
        rc = yk_errorf(d, YK_EINVAL, "no file matches '%s'", a);
      } else if (grc != 0) {
        rc = yk_errorf(d, YK_EIO, "cannot expand '%s'", a);
      } else {
        for (size_t k = 0; k < g.gl_pathc && !rc; k++) {
          size_t L = strlen(g.gl_pathv[k]);
          if (L && g.gl_pathv[k][L - 1] == '/') continue; /* GLOB_MARK: a directory */
          if (list_add(&files, g.gl_pathv[k])) rc = yk_errorf(d, YK_ENOMEM, "out of memory");
        }
        globfree(&g);
      }
    } else if (list_add(&files, a)) {
      rc = yk_errorf(d, YK_ENOMEM, "out of memory");
    }
  }
  if (rc) goto done;
  qsort(files.v, files.n, sizeof *files.v, cmp_str);

  tokbuf train = {0}, val = {0};
  fileid *seen = calloc(files.n + 1, sizeof *seen);
  size_t nseen = 0;
  if (!seen) {
    rc = yk_errorf(d, YK_ENOMEM, "out of memory");
    goto done;
  }
  for (size_t i = 0; i < files.n && !rc; i++) {
    const char *path = files.v[i];
    struct stat st;
    if (stat(path, &st) != 0) {
      rc = yk_errorf_sys(d, YK_EIO, "cannot read %s", path);
      break;
    }
    if (S_ISDIR(st.st_mode)) {
      rc = yk_errorf(d, YK_EINVAL, "%s is a directory; give files or a glob such as '%s/*'", path, path);
      break;
    }
    int dup = 0;
    for (size_t k = 0; k < nseen; k++)
      if (seen[k].dev == st.st_dev && seen[k].ino == st.st_ino) dup = 1;
    if (dup) {
      res->duplicates++;
      continue;
    }
    seen[nseen++] = (fileid){st.st_dev, st.st_ino};
    char *text;
    size_t len;
    if ((rc = yk_file_read(path, &text, &len, d))) break;
    const char *nul = memchr(text, 0, len);
    if (nul) {
      rc = yk_errorf(d, YK_EFORMAT, "%s has a NUL byte at offset %zu, so it is not a text file (byte 0 separates "
                     "documents); leave it out", path, (size_t)(nul - text));
      free(text);
      break;
    }
    if (len == 0) { /* a document with no text would be a lone separator */
      res->bytes += len;
      free(text);
      continue;
    }
    int32_t *tok;
    size_t ntok;
    rc = yk_data_tokenizer_encode(tk, text, len, &tok, &ntok, d);
    free(text);
    if (rc) break;
    size_t nval = (size_t)((double)ntok * o->val_fraction);
    if (nval > ntok) nval = ntok;
    int prc = push_doc(&train, sep, tok, ntok - nval);
    if (!prc && nval) prc = push_doc(&val, sep, tok + (ntok - nval), nval);
    free(tok);
    res->bytes += len;
    if (prc) rc = yk_errorf(d, YK_ENOMEM, "out of memory after %zu bytes", res->bytes);
  }
  free(seen);
  res->files = nseen;
  if (!rc && (train.n == 0 || (int64_t)train.n < o->min_tokens)) {
    /* name the input: the one file, or the first of several */
    char what[2100];
    if (files.n == 1) snprintf(what, sizeof what, "%s", files.v[0]);
    else snprintf(what, sizeof what, "the %zu input files (%s, ...)", files.n, files.v[0]);
    if (train.n == 0)
      rc = yk_errorf(d, YK_EFORMAT, "%s %s empty: there is no text to make shards of", what,
                     files.n == 1 ? "is" : "are all");
    else
      rc = yk_errorf(d, YK_EFORMAT,
                     "%s: %zu bytes give %zu train tokens, fewer than one training window of %lld "
                     "(train.micro_batch x train.seq_len + 1 at their defaults); give more text, or --min-tokens N "
                     "for smaller windows",
                     what, res->bytes, train.n, (long long)o->min_tokens);
  }
  if (!rc && !(rc = yk_mkdirs(o->out, d)) && (rc = remove_old_shards(o->out, "train", d)) >= 0 &&
      (rc = remove_old_shards(o->out, "val", d)) >= 0 &&
      !(rc = write_split(o->out, "train", &train, (uint64_t)o->shard_tokens, &res->train_shards, d)))
    rc = write_split(o->out, "val", &val, (uint64_t)o->shard_tokens, &res->val_shards, d);
  res->train_tokens = train.n;
  res->val_tokens = val.n;
  free(train.v);
  free(val.v);
done:
  list_free(&files);
  yk_data_tokenizer_destroy(own);
  return rc;
}

int yk_data_info_print(const yk_data_info_opts *o, FILE *out, yk_diag *d) {
  if (o->vocab < 0 || o->vocab > 65536)
    return yk_errorf(d, YK_EINVAL, "vocab %lld must be an integer in [1, 65536] (0: any)", (long long)o->vocab);
  if (o->ninputs < 1) return yk_errorf(d, YK_EINVAL, "no shard given");
  strlist files = {0};
  int rc = 0;
  for (int i = 0; i < o->ninputs && !rc; i++) {
    const char *a = o->inputs[i];
    if (strpbrk(a, "*?[")) {
      glob_t g;
      if (glob(a, 0, NULL, &g) != 0) {
        rc = yk_errorf(d, YK_EINVAL, "no file matches '%s'", a);
        break;
      }
      qsort(g.gl_pathv, g.gl_pathc, sizeof *g.gl_pathv, cmp_str);
      for (size_t k = 0; k < g.gl_pathc && !rc; k++)
        if (list_add(&files, g.gl_pathv[k])) rc = yk_errorf(d, YK_ENOMEM, "out of memory");
      globfree(&g);
    } else if (list_add(&files, a)) {
      rc = yk_errorf(d, YK_ENOMEM, "out of memory");
    }
  }
  uint64_t total = 0;
  for (size_t i = 0; i < files.n && !rc; i++) {
    yk_data_shard s;
    if ((rc = yk_data_shard_open(&s, files.v[i], o->vocab, d))) break;
    unsigned mx = 0;
    for (uint64_t k = 0; k < s.ntok; k++) mx = s.tokens[k] > mx ? s.tokens[k] : mx;
    fprintf(out, "%s: %llu tokens, largest id %u", s.path, (unsigned long long)s.ntok, mx);
    if (mx < YK_DATA_BYTE_VOCAB && s.ntok) { /* byte-level: show the start as text */
      fprintf(out, ", starts \"");
      for (uint64_t k = 0; k < s.ntok && k < 48; k++) {
        unsigned c = s.tokens[k];
        if (c == '\n') fprintf(out, "\\n");
        else if (c == '"' || c == '\\') fprintf(out, "\\%c", (char)c);
        else if (c >= 32 && c < 127) fputc((int)c, out);
        else fprintf(out, "\\x%02x", c);
      }
      fprintf(out, "\"");
    }
    fprintf(out, "\n");
    total += s.ntok;
    yk_data_shard_close(&s);
  }
  if (!rc && files.n > 1) fprintf(out, "total: %llu tokens in %zu shards\n", (unsigned long long)total, files.n);
  list_free(&files);
  return rc;
}
