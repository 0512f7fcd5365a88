/* prepare.c - `yoke data prepare`: text files -> byte-level token shards.
 *
 * Deterministic: inputs are expanded, sorted byte-wise by path, and files
 * reached twice (symlinks such as common-licenses/GPL -> GPL-3, hard links)
 * are read once. Each document contributes, to train, token 0 (the document
 * separator; byte NUL never occurs in text) followed by its first
 * len - floor(len * F) bytes and, to val, token 0 followed by its last
 * floor(len * F) bytes (when that is non-zero). Splitting every document
 * keeps train and val from the same distribution without sharing text. */
#include "yk_data.h"

#include <dirent.h>
#include <errno.h>
#include <glob.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const char prepare_usage[] =
    "usage: yoke data prepare [--out DIR] [--val-fraction F] [--shard-tokens N] FILE|GLOB...\n"
    "\n"
    "Turn text files into byte-level token shards (vocabulary 256: token = byte value)\n"
    "for the quick-start models. Files are sorted by path and read once each (symlinked\n"
    "duplicates are skipped); every document starts with token 0 as a separator, and the\n"
    "last fraction F of every document goes to the validation split.\n"
    "\n"
    "  --out DIR          output directory (default: data); writes DIR/train_NNN.bin and\n"
    "                     DIR/val_NNN.bin, replacing shards of an earlier run there\n"
    "  --val-fraction F   0 <= F < 1 (default 0.1); 0 writes no val shard\n"
    "  --shard-tokens N   at most N tokens per shard file (default 100000000)\n"
    "  -h, --help         this help\n"
    "\n"
    "Quoted globs are expanded by yoke, e.g.\n"
    "  yoke data prepare --out data/licenses '/usr/share/common-licenses/*'\n";

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

static int push_text(tokbuf *b, const char *text, size_t n) {
  static const uint16_t sep = 0;
  if (tok_push(b, &sep, 1)) return YK_ENOMEM;
  uint16_t tmp[4096];
  for (size_t i = 0; i < n; i += 4096) {
    size_t k = YK_MIN((size_t)4096, n - i);
    yk_data_bytes_encode(text + i, k, tmp);
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

int yk_data_cmd_prepare(int argc, char **argv) {
  const char *out = "data";
  double frac = 0.1;
  int64_t per_shard = 100000000;
  strlist args = {0}, files = {0};
  int rc = 0, exitc = 0;
  yk_diag d = {0};
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i], *val = NULL;
    if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
      fputs(prepare_usage, stdout);
      list_free(&args);
      return 0;
    }
    const char *opts[] = {"--out", "--val-fraction", "--shard-tokens"};
    int which = -1;
    for (int k = 0; k < 3; k++) {
      size_t L = strlen(opts[k]);
      if (!strncmp(a, opts[k], L) && (a[L] == 0 || a[L] == '=')) {
        which = k;
        if (a[L] == '=') val = a + L + 1;
        else if (i + 1 < argc) val = argv[++i];
        else {
          fprintf(stderr, "yoke data prepare: %s needs a value\n%s", opts[k], prepare_usage);
          list_free(&args);
          return 2;
        }
      }
    }
    if (which < 0 && a[0] == '-' && a[1]) {
      fprintf(stderr, "yoke data prepare: unknown option '%s'\n%s", a, prepare_usage);
      list_free(&args);
      return 2;
    }
    if (which == 0) out = val;
    else if (which == 1) {
      if (yk_parse_f64(val, &frac) || !(frac >= 0 && frac < 1)) {
        fprintf(stderr, "yoke data prepare: --val-fraction '%s' must be a number in [0, 1)\n", val);
        list_free(&args);
        return 2;
      }
    } else if (which == 2) {
      if (yk_parse_i64(val, &per_shard) || per_shard < 1 || (uint64_t)per_shard > YK_SHARD_MAX_TOKENS) {
        fprintf(stderr, "yoke data prepare: --shard-tokens '%s' must be an integer in [1, %llu]\n", val,
                YK_SHARD_MAX_TOKENS);
        list_free(&args);
        return 2;
      }
    } else if (list_add(&args, a)) {
      list_free(&args);
      return 1;
    }
  }
  if (args.n == 0) {
    fprintf(stderr, "yoke data prepare: no input files given\n%s", prepare_usage);
    return 2;
  }

  /* expand globs; directories matched by a glob are skipped, named ones are an error */
  for (size_t i = 0; i < args.n && !exitc; i++) {
    const char *a = args.v[i];
    if (strpbrk(a, "*?[")) {
      glob_t g;
      int grc = glob(a, GLOB_MARK, NULL, &g);
      if (grc == GLOB_NOMATCH) {
        fprintf(stderr, "yoke data prepare: no file matches '%s'\n", a);
        exitc = 2;
      } else if (grc != 0) {
        fprintf(stderr, "yoke data prepare: cannot expand '%s'\n", a);
        exitc = 1;
      } else {
        for (size_t k = 0; k < g.gl_pathc; k++) {
          size_t L = strlen(g.gl_pathv[k]);
          if (L && g.gl_pathv[k][L - 1] == '/') continue; /* GLOB_MARK: a directory */
          if (list_add(&files, g.gl_pathv[k])) exitc = 1;
        }
        globfree(&g);
      }
    } else if (list_add(&files, a)) {
      exitc = 1;
    }
  }
  list_free(&args);
  if (exitc) goto done;
  qsort(files.v, files.n, sizeof *files.v, cmp_str);

  tokbuf train = {0}, val = {0};
  fileid *seen = calloc(files.n + 1, sizeof *seen);
  size_t nseen = 0, dups = 0, bytes = 0;
  if (!seen) {
    exitc = 1;
    goto done;
  }
  for (size_t i = 0; i < files.n; i++) {
    const char *path = files.v[i];
    struct stat st;
    if (stat(path, &st) != 0) {
      fprintf(stderr, "yoke data prepare: cannot read %s: %s\n", path, strerror(errno));
      exitc = 1;
      break;
    }
    if (S_ISDIR(st.st_mode)) {
      fprintf(stderr, "yoke data prepare: %s is a directory; give files or a glob such as '%s/*'\n", path, path);
      exitc = 2;
      break;
    }
    int dup = 0;
    for (size_t k = 0; k < nseen; k++)
      if (seen[k].dev == st.st_dev && seen[k].ino == st.st_ino) dup = 1;
    if (dup) {
      dups++;
      continue;
    }
    seen[nseen++] = (fileid){st.st_dev, st.st_ino};
    char *text;
    size_t len;
    rc = yk_file_read(path, &text, &len, &d);
    if (rc) {
      fprintf(stderr, "yoke data prepare: %s\n", yk_diag_msg(&d, rc));
      exitc = 1;
      break;
    }
    const char *nul = memchr(text, 0, len);
    if (nul) {
      fprintf(stderr,
              "yoke data prepare: %s has a NUL byte at offset %zu, so it is not a text file (byte 0 separates "
              "documents); leave it out\n",
              path, (size_t)(nul - text));
      free(text);
      exitc = 1;
      break;
    }
    size_t nval = (size_t)((double)len * frac);
    if (nval > len) nval = len;
    rc = push_text(&train, text, len - nval);
    if (!rc && nval) rc = push_text(&val, text + (len - nval), nval);
    free(text);
    bytes += len;
    if (rc) {
      fprintf(stderr, "yoke data prepare: out of memory after %zu bytes\n", bytes);
      exitc = 1;
      break;
    }
  }
  free(seen);
  if (!exitc && train.n == 0) {
    fprintf(stderr, "yoke data prepare: the inputs hold no text\n");
    exitc = 1;
  }
  int ntr = 0, nva = 0;
  if (!exitc) {
    if ((rc = yk_mkdirs(out, &d)) || (rc = remove_old_shards(out, "train", &d)) < 0 ||
        (rc = remove_old_shards(out, "val", &d)) < 0 ||
        (rc = write_split(out, "train", &train, (uint64_t)per_shard, &ntr, &d)) ||
        (rc = write_split(out, "val", &val, (uint64_t)per_shard, &nva, &d))) {
      fprintf(stderr, "yoke data prepare: %s\n", yk_diag_msg(&d, rc));
      exitc = 1;
    }
  }
  if (!exitc) {
    printf("read %zu files, %zu bytes", nseen, bytes);
    if (dups) printf(" (%zu duplicate path%s skipped)", dups, dups == 1 ? "" : "s");
    printf("\ntrain: %zu tokens in %d shard%s: %s/train_*.bin\n", train.n, ntr, ntr == 1 ? "" : "s", out);
    if (nva) printf("val: %zu tokens in %d shard%s: %s/val_*.bin\n", val.n, nva, nva == 1 ? "" : "s", out);
    else printf("val: none (--val-fraction 0 or documents too short)\n");
    printf("vocabulary: %d (byte-level)\n", YK_DATA_BYTE_VOCAB);
  }
  free(train.v);
  free(val.v);
done:
  list_free(&files);
  return exitc;
}

static const char info_usage[] =
    "usage: yoke data info [--vocab V] SHARD|GLOB...\n"
    "\n"
    "Check token shards and print, per file: token count, largest token id and,\n"
    "for byte-level shards, the first bytes as text. Exit 1 if any shard is bad.\n"
    "\n"
    "  --vocab V    also require every token id < V (the model's vocabulary size)\n"
    "  -h, --help   this help\n";

int yk_data_cmd_info(int argc, char **argv) {
  int64_t vocab = 0;
  strlist files = {0};
  int exitc = 0;
  for (int i = 1; i < argc && !exitc; i++) {
    const char *a = argv[i];
    if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
      fputs(info_usage, stdout);
      list_free(&files);
      return 0;
    }
    if (!strcmp(a, "--vocab") || !strncmp(a, "--vocab=", 8)) {
      const char *v = a[7] == '=' ? a + 8 : (i + 1 < argc ? argv[++i] : NULL);
      if (!v || yk_parse_i64(v, &vocab) || vocab < 1 || vocab > 65536) {
        fprintf(stderr, "yoke data info: --vocab needs an integer in [1, 65536]\n%s", info_usage);
        exitc = 2;
      }
      continue;
    }
    if (a[0] == '-' && a[1]) {
      fprintf(stderr, "yoke data info: unknown option '%s'\n%s", a, info_usage);
      exitc = 2;
      continue;
    }
    if (strpbrk(a, "*?[")) {
      glob_t g;
      if (glob(a, 0, NULL, &g) != 0) {
        fprintf(stderr, "yoke data info: no file matches '%s'\n", a);
        exitc = 2;
        continue;
      }
      qsort(g.gl_pathv, g.gl_pathc, sizeof *g.gl_pathv, cmp_str);
      for (size_t k = 0; k < g.gl_pathc && !exitc; k++)
        if (list_add(&files, g.gl_pathv[k])) exitc = 1;
      globfree(&g);
    } else if (list_add(&files, a)) {
      exitc = 1;
    }
  }
  if (!exitc && files.n == 0) {
    fprintf(stderr, "yoke data info: no shard given\n%s", info_usage);
    exitc = 2;
  }
  uint64_t total = 0;
  for (size_t i = 0; i < files.n && !exitc; i++) {
    yk_data_shard s;
    yk_diag d = {0};
    int rc = yk_data_shard_open(&s, files.v[i], vocab, &d);
    if (rc) {
      fprintf(stderr, "yoke data info: %s\n", yk_diag_msg(&d, rc));
      exitc = 1;
      break;
    }
    unsigned mx = 0;
    for (uint64_t k = 0; k < s.ntok; k++) mx = s.tokens[k] > mx ? s.tokens[k] : mx;
    printf("%s: %llu tokens, largest id %u", s.path, (unsigned long long)s.ntok, mx);
    if (mx < YK_DATA_BYTE_VOCAB && s.ntok) { /* byte-level: show the start as text */
      printf(", starts \"");
      for (uint64_t k = 0; k < s.ntok && k < 48; k++) {
        unsigned c = s.tokens[k];
        if (c == '\n') printf("\\n");
        else if (c == '"' || c == '\\') printf("\\%c", (char)c);
        else if (c >= 32 && c < 127) putchar((int)c);
        else printf("\\x%02x", c);
      }
      printf("\"");
    }
    printf("\n");
    total += s.ntok;
    yk_data_shard_close(&s);
  }
  if (!exitc && files.n > 1) printf("total: %llu tokens in %zu shards\n", (unsigned long long)total, files.n);
  list_free(&files);
  return exitc;
}

static const char data_usage[] =
    "usage: yoke data <action> [options]\n\n"
    "actions:\n"
    "  prepare   turn text files into byte-level train/val token shards\n"
    "  info      check token shards and show their size and first tokens\n\n"
    "Run 'yoke data <action> --help' for its options.\n";

int yk_data_cmd_data(int argc, char **argv) {
  if (argc < 2) {
    fputs(data_usage, stderr);
    return 2;
  }
  if (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help")) {
    fputs(data_usage, stdout);
    return 0;
  }
  if (!strcmp(argv[1], "prepare")) return yk_data_cmd_prepare(argc - 1, argv + 1);
  if (!strcmp(argv[1], "info")) return yk_data_cmd_info(argc - 1, argv + 1);
  fprintf(stderr, "yoke data: unknown action '%s'\n%s", argv[1], data_usage);
  return 2;
}
