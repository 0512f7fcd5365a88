/* tokenizer.c - the tokenizers: byte-level (token = byte value) and GPT-2's
 * byte-level BPE, read from the files users have: llm.c's gpt2_tokenizer.bin
 * (decoding only: it holds each token's bytes, not the merges) or GPT-2's
 * encoder.json + vocab.bpe (encoding and decoding). Formats in
 * docs/formats.md ("GPT-2 tokenizer files").
 *
 * GPT-2 BPE, as OpenAI's encoder.py defines it:
 *   1. the text is cut into pre-tokens by the pattern
 *        's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
 *      (pretok below implements it by hand; the character classes are exact
 *      for ASCII and Latin-1 and approximate beyond, see cp_class);
 *   2. each pre-token's bytes become symbols, one per byte, each written as
 *      the printable character bytes_to_unicode assigns to the byte (the
 *      alphabet of encoder.json's keys and vocab.bpe's merges);
 *   3. repeatedly, the adjacent pair with the lowest merge rank (its line in
 *      vocab.bpe) is merged, every occurrence left to right, until no pair
 *      has a rank; each symbol is then looked up in encoder.json.
 * Decoding maps a token's characters back to bytes. */
#include "yk_data.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

enum { TK_BYTE, TK_GPT2 };

/* A string -> int hash map (open addressing, FNV-1a); keys are copied. */
typedef struct strmap {
  char **key;
  uint32_t *klen;
  int32_t *val;
  size_t cap, n;
} strmap;

static uint64_t fnv(const char *s, size_t n) {
  uint64_t h = 1469598103934665603ull;
  for (size_t i = 0; i < n; i++) h = (h ^ (uint8_t)s[i]) * 1099511628211ull;
  return h;
}

static int map_grow(strmap *m) {
  size_t cap = m->cap ? 2 * m->cap : 1024;
  strmap nm = {calloc(cap, sizeof(char *)), calloc(cap, sizeof(uint32_t)), calloc(cap, sizeof(int32_t)), cap, m->n};
  if (!nm.key || !nm.klen || !nm.val) {
    free(nm.key), free(nm.klen), free(nm.val);
    return YK_ENOMEM;
  }
  for (size_t i = 0; i < m->cap; i++)
    if (m->key[i]) {
      size_t j = fnv(m->key[i], m->klen[i]) & (cap - 1);
      while (nm.key[j]) j = (j + 1) & (cap - 1);
      nm.key[j] = m->key[i], nm.klen[j] = m->klen[i], nm.val[j] = m->val[i];
    }
  free(m->key), free(m->klen), free(m->val);
  *m = nm;
  return 0;
}

/* The slot of key s[0..n), or of the empty slot where it would go. */
static size_t map_slot(const strmap *m, const char *s, size_t n) {
  size_t j = fnv(s, n) & (m->cap - 1);
  while (m->key[j] && !(m->klen[j] == n && !memcmp(m->key[j], s, n))) j = (j + 1) & (m->cap - 1);
  return j;
}

static int map_get(const strmap *m, const char *s, size_t n) {
  if (!m->cap) return -1;
  size_t j = map_slot(m, s, n);
  return m->key[j] ? m->val[j] : -1;
}

/* Insert; 1 if the key was already there (value unchanged), 0, or YK_ENOMEM. */
static int map_put(strmap *m, const char *s, size_t n, int32_t v) {
  if (2 * (m->n + 1) > m->cap && map_grow(m)) return YK_ENOMEM;
  size_t j = map_slot(m, s, n);
  if (m->key[j]) return 1;
  if (!(m->key[j] = malloc(n + 1))) return YK_ENOMEM;
  memcpy(m->key[j], s, n);
  m->key[j][n] = 0;
  m->klen[j] = (uint32_t)n;
  m->val[j] = v;
  m->n++;
  return 0;
}

static void map_free(strmap *m) {
  for (size_t i = 0; i < m->cap; i++) free(m->key[i]);
  free(m->key), free(m->klen), free(m->val);
  memset(m, 0, sizeof *m);
}

struct yk_tokenizer {
  int kind, vocab, eot;
  char name[64];
  /* decoding: token i is blob[off[i] .. off[i] + len[i]); has[i] = 0 when
   * the file gave no bytes for it */
  char *blob;
  size_t *off;
  uint32_t *len;
  uint8_t *has;
  /* encoding (GPT-2 from encoder.json + vocab.bpe) */
  int can_encode;
  strmap enc;   /* symbol (bytes_to_unicode form) -> token id */
  strmap ranks; /* "first second" -> merge rank */
  char sym[256][3];
  uint8_t sym_len[256];
  int16_t unsym[324]; /* code point -> byte, -1 if none */
};

/* ---- bytes_to_unicode -------------------------------------------------------
 * GPT-2 writes every byte as one printable character so that vocab files are
 * text: the bytes '!'..'~', 0xA1..0xAC and 0xAE..0xFF stand for themselves
 * (as code points), the other 68 bytes, in increasing order, for U+0100,
 * U+0101, ..., U+0143. */
static void byte_alphabet(yk_tokenizer *t) {
  for (int i = 0; i < 324; i++) t->unsym[i] = -1;
  int extra = 0;
  for (int b = 0; b < 256; b++) {
    int self = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
    int cp = self ? b : 256 + extra++;
    t->unsym[cp] = (int16_t)b;
    if (cp < 0x80) {
      t->sym[b][0] = (char)cp;
      t->sym_len[b] = 1;
    } else {
      t->sym[b][0] = (char)(0xC0 | (cp >> 6));
      t->sym[b][1] = (char)(0x80 | (cp & 0x3F));
      t->sym_len[b] = 2;
    }
  }
}

/* One UTF-8 character at s[0..n): its code point and length. An invalid or
 * truncated sequence is one byte with code point -1 (classed as "other"). */
static int utf8_next(const unsigned char *s, size_t n, int *cp) {
  unsigned c = s[0];
  int len = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
  if (len == 0 || (size_t)len > n) {
    *cp = -1;
    return 1;
  }
  int v = len == 1 ? (int)c : (int)(c & (0x7F >> len));
  for (int i = 1; i < len; i++) {
    if ((s[i] & 0xC0) != 0x80) {
      *cp = -1;
      return 1;
    }
    v = (v << 6) | (s[i] & 0x3F);
  }
  *cp = v;
  return len;
}

/* Text (bytes_to_unicode form) -> bytes into out (room for n bytes); the
 * count, or -1 if a character is not in the byte alphabet. */
static long unmap_symbols(const yk_tokenizer *t, const char *s, size_t n, char *out) {
  long k = 0;
  for (size_t i = 0; i < n;) {
    int cp;
    i += (size_t)utf8_next((const unsigned char *)s + i, n - i, &cp);
    if (cp < 0 || cp >= 324 || t->unsym[cp] < 0) return -1;
    out[k++] = (char)t->unsym[cp];
  }
  return k;
}

/* ---- the pre-tokenizer ------------------------------------------------------ */

enum { CL_OTHER, CL_LETTER, CL_NUMBER, CL_SPACE };

/* \s, \p{L} and \p{N} of the `regex` module: exact for code points below
 * U+0250 (ASCII, Latin-1, Latin Extended-A/B); above, whitespace is exact,
 * the punctuation and symbol blocks U+2000-U+2BFF, U+3000-U+303F and
 * U+FE30-U+FF0F are "other", and everything else counts as a letter. */
static int cp_class(int cp) {
  if (cp < 0) return CL_OTHER;
  if (cp == ' ' || (cp >= 9 && cp <= 13) || cp == 0x85 || cp == 0xA0 || cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200A) ||
      cp == 0x2028 || cp == 0x2029 || cp == 0x202F || cp == 0x205F || cp == 0x3000)
    return CL_SPACE;
  if ((cp >= '0' && cp <= '9') || cp == 0xB2 || cp == 0xB3 || cp == 0xB9 || (cp >= 0xBC && cp <= 0xBE))
    return CL_NUMBER;
  if ((cp >= 'A' && cp <= 'Z') || (cp >= 'a' && cp <= 'z') || cp == 0xAA || cp == 0xB5 || cp == 0xBA) return CL_LETTER;
  if (cp < 0xC0) return CL_OTHER;
  if (cp < 0x250) return cp == 0xD7 || cp == 0xF7 ? CL_OTHER : CL_LETTER;
  if ((cp >= 0x2000 && cp <= 0x2BFF) || (cp >= 0x3000 && cp <= 0x303F) || (cp >= 0xFE30 && cp <= 0xFF0F))
    return CL_OTHER;
  return CL_LETTER;
}

/* End (exclusive) of the run of class cl starting at i. */
static size_t run_end(const unsigned char *s, size_t n, size_t i, int cl) {
  while (i < n) {
    int cp, k = utf8_next(s + i, n - i, &cp);
    if (cp_class(cp) != cl) break;
    i += (size_t)k;
  }
  return i;
}

/* The end of the pre-token starting at s[i] (i < n). */
static size_t pretok(const unsigned char *s, size_t n, size_t i) {
  if (s[i] == '\'' && i + 1 < n) { /* 's 't 're 've 'm 'll 'd */
    unsigned char a = s[i + 1], b = i + 2 < n ? s[i + 2] : 0;
    if (a == 's' || a == 't' || a == 'm' || a == 'd') return i + 2;
    if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) return i + 3;
  }
  int cp, k = utf8_next(s + i, n - i, &cp), cl = cp_class(cp);
  if (cl != CL_SPACE) return run_end(s, n, i, cl); /* \p{L}+, \p{N}+, [^\s\p{L}\p{N}]+ */
  if (s[i] == ' ' && i + 1 < n) {                  /* " ?X+" */
    int cp2;
    utf8_next(s + i + 1, n - i - 1, &cp2);
    int cl2 = cp_class(cp2);
    if (cl2 != CL_SPACE) return run_end(s, n, i + 1, cl2);
  }
  /* \s+(?!\S): the whitespace run, less its last character when a
   * non-space follows (that one goes with the next word); \s+ when the
   * run is that one character */
  size_t j = i, last = i;
  while (j < n) {
    int c2, k2 = utf8_next(s + j, n - j, &c2);
    if (cp_class(c2) != CL_SPACE) break;
    last = j;
    j += (size_t)k2;
  }
  (void)k;
  return j < n && last > i ? last : j;
}

/* ---- BPE ------------------------------------------------------------------- */

typedef struct span {
  uint32_t a, n; /* symbol = u[a .. a+n) */
} span;

typedef struct bpe_work {
  char *u;        /* the pre-token in bytes_to_unicode form */
  span *sym;
  char *key;      /* "first second" */
  size_t ucap, scap, kcap;
} bpe_work;

static int grow(void **p, size_t *cap, size_t need, size_t elem) {
  if (need <= *cap) return 0;
  size_t c = *cap ? *cap : 256;
  while (c < need) c *= 2;
  void *np = realloc(*p, c * elem);
  if (!np) return YK_ENOMEM;
  *p = np;
  *cap = c;
  return 0;
}

static int pair_rank(const yk_tokenizer *t, bpe_work *w, span x, span y) {
  memcpy(w->key, w->u + x.a, x.n);
  w->key[x.n] = ' ';
  memcpy(w->key + x.n + 1, w->u + y.a, y.n);
  return map_get(&t->ranks, w->key, (size_t)x.n + 1 + y.n);
}

typedef struct tokvec {
  int32_t *v;
  size_t n, cap;
} tokvec;

/* BPE of one pre-token s[0..n) appended to out. */
static int bpe_word(const yk_tokenizer *t, bpe_work *w, const unsigned char *s, size_t n, tokvec *out, yk_diag *d) {
  if (grow((void **)&w->u, &w->ucap, 2 * n, 1) || grow((void **)&w->sym, &w->scap, n, sizeof(span)) ||
      grow((void **)&w->key, &w->kcap, 4 * n + 2, 1) || grow((void **)&out->v, &out->cap, out->n + n, sizeof(int32_t)))
    return yk_errorf(d, YK_ENOMEM, "out of memory encoding a %zu-byte word", n);
  size_t ns = 0, ul = 0;
  for (size_t i = 0; i < n; i++) {
    memcpy(w->u + ul, t->sym[s[i]], t->sym_len[s[i]]);
    w->sym[ns++] = (span){(uint32_t)ul, t->sym_len[s[i]]};
    ul += t->sym_len[s[i]];
  }
  while (ns > 1) {
    int best = -1;
    size_t at = 0;
    for (size_t i = 0; i + 1 < ns; i++) {
      int r = pair_rank(t, w, w->sym[i], w->sym[i + 1]);
      if (r >= 0 && (best < 0 || r < best)) best = r, at = i;
    }
    if (best < 0) break;
    /* merge every occurrence of the pair (x, y), left to right */
    span x = w->sym[at], y = w->sym[at + 1];
    size_t k = 0;
    for (size_t i = 0; i < ns;) {
      if (i + 1 < ns && w->sym[i].n == x.n && w->sym[i + 1].n == y.n && !memcmp(w->u + w->sym[i].a, w->u + x.a, x.n) &&
          !memcmp(w->u + w->sym[i + 1].a, w->u + y.a, y.n)) {
        w->sym[k++] = (span){w->sym[i].a, x.n + y.n}; /* adjacent spans: one span */
        i += 2;
      } else {
        w->sym[k++] = w->sym[i++];
      }
    }
    ns = k;
  }
  for (size_t i = 0; i < ns; i++) {
    int id = map_get(&t->enc, w->u + w->sym[i].a, w->sym[i].n);
    if (id < 0)
      return yk_errorf(d, YK_EFORMAT, "%s: the symbol '%.*s' made by its merges is not in encoder.json; use the "
                       "encoder.json and vocab.bpe of the same release", t->name, (int)w->sym[i].n, w->u + w->sym[i].a);
    out->v[out->n++] = id;
  }
  return 0;
}

/* ---- construction ---------------------------------------------------------- */

static yk_tokenizer *tk_new(int kind, int vocab, const char *name) {
  yk_tokenizer *t = calloc(1, sizeof *t);
  if (!t) return NULL;
  t->kind = kind;
  t->vocab = vocab;
  t->eot = -1;
  snprintf(t->name, sizeof t->name, "%s", name);
  byte_alphabet(t);
  if (kind == TK_GPT2) {
    t->off = calloc((size_t)vocab, sizeof *t->off);
    t->len = calloc((size_t)vocab, sizeof *t->len);
    t->has = calloc((size_t)vocab, 1);
    if (!t->off || !t->len || !t->has) {
      yk_data_tokenizer_destroy(t);
      return NULL;
    }
  }
  return t;
}

int yk_data_tokenizer_byte(yk_tokenizer **out, yk_diag *d) {
  *out = tk_new(TK_BYTE, YK_DATA_BYTE_VOCAB, "byte");
  if (!*out) return yk_errorf(d, YK_ENOMEM, "out of memory for the byte tokenizer");
  (*out)->eot = 0; /* the document separator `yoke data prepare` writes (NUL is never in text) */
  return 0;
}

void yk_data_tokenizer_destroy(yk_tokenizer *t) {
  if (!t) return;
  free(t->blob);
  free(t->off);
  free(t->len);
  free(t->has);
  map_free(&t->enc);
  map_free(&t->ranks);
  free(t);
}

static uint32_t rd32(const unsigned char *p) { return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24; }

int yk_data_tokenizer_load_bin(const char *path, yk_tokenizer **out, yk_diag *d) {
  *out = NULL;
  char *buf;
  size_t n;
  yk_diag sub = {0};
  int rc = yk_file_read(path, &buf, &n, &sub);
  if (rc) return yk_errorf(d, rc, "%s; give the path of llm.c's gpt2_tokenizer.bin", yk_diag_msg(&sub, rc));
  const unsigned char *p = (const unsigned char *)buf;
  yk_tokenizer *t = NULL;
  if (n < YK_TOKENIZER_HEADER_BYTES) {
    rc = yk_errorf(d, YK_EFORMAT, "%s: %zu bytes, shorter than the %d-byte header of a GPT-2 tokenizer file; give "
                   "llm.c's gpt2_tokenizer.bin", path, n, YK_TOKENIZER_HEADER_BYTES);
    goto out;
  }
  uint32_t magic = rd32(p), version = rd32(p + 4), vocab = rd32(p + 8);
  if (magic != YK_TOKENIZER_MAGIC) {
    rc = yk_errorf(d, YK_EFORMAT, "%s: magic %u, expected %d (llm.c's gpt2_tokenizer.bin); is it a tokenizer file?",
                   path, magic, YK_TOKENIZER_MAGIC);
    goto out;
  }
  if (version != 1 && version != 2) {
    rc = yk_errorf(d, YK_EFORMAT, "%s: version %u, expected 1 or 2; regenerate it with llm.c's tokenizer export", path,
                   version);
    goto out;
  }
  if (vocab < 1 || vocab > 65536) {
    rc = yk_errorf(d, YK_EFORMAT, "%s: vocabulary size %u is out of range [1, 65536]; the file is damaged", path, vocab);
    goto out;
  }
  /* version 1 has no EOT field; llm.c's GPT-2 files use 50256 */
  uint32_t eot = version == 2 ? rd32(p + 12) : 50256;
  if (!(t = tk_new(TK_GPT2, (int)vocab, "gpt2 (tokenizer.bin)")) || !(t->blob = malloc(n))) {
    rc = yk_errorf(d, YK_ENOMEM, "out of memory reading %s", path);
    goto out;
  }
  t->eot = eot < vocab ? (int)eot : -1;
  size_t at = YK_TOKENIZER_HEADER_BYTES, bl = 0;
  for (uint32_t i = 0; i < vocab; i++) {
    if (at >= n || at + 1 + p[at] > n) {
      rc = yk_errorf(d, YK_EFORMAT, "%s: the file ends inside token %u of %u (%zu bytes); the file is truncated", path, i,
                     vocab, n);
      goto out;
    }
    if (p[at] == 0) {
      rc = yk_errorf(d, YK_EFORMAT, "%s: token %u has length 0 at offset %zu; every token has 1..255 bytes, the file is "
                     "damaged", path, i, at);
      goto out;
    }
    t->off[i] = bl;
    t->len[i] = p[at];
    t->has[i] = 1;
    memcpy(t->blob + bl, p + at + 1, p[at]);
    bl += p[at];
    at += 1 + (size_t)p[at];
  }
  if (at != n) {
    rc = yk_errorf(d, YK_EFORMAT, "%s: %zu bytes follow the last of its %u tokens; the file is damaged", path, n - at,
                   vocab);
    goto out;
  }
out:
  free(buf);
  if (rc) yk_data_tokenizer_destroy(t);
  else *out = t;
  return rc;
}

/* encoder.json into t (enc map and the decode table). */
static int load_encoder(yk_tokenizer **tp, const char *path, yk_diag *d) {
  json_error_t je;
  json_t *j = json_load_file(path, 0, &je);
  if (!j)
    return yk_errorf(d, je.line < 0 ? YK_EIO : YK_EFORMAT, "%s: %s (line %d); give GPT-2's encoder.json", path,
                     je.text, je.line);
  int rc = 0;
  const char *k;
  json_t *v;
  json_int_t maxid = -1;
  if (!json_is_object(j) || json_object_size(j) == 0) {
    rc = yk_errorf(d, YK_EFORMAT, "%s: not a JSON object of token -> id; give GPT-2's encoder.json", path);
    goto out;
  }
  json_object_foreach(j, k, v) {
    json_int_t id = json_integer_value(v);
    if (!json_is_integer(v) || id < 0 || id >= 65536) {
      rc = yk_errorf(d, YK_EFORMAT, "%s: the id of \"%s\" is not an integer in [0, 65536); the file is damaged", path, k);
      goto out;
    }
    maxid = id > maxid ? id : maxid;
  }
  yk_tokenizer *t = tk_new(TK_GPT2, (int)maxid + 1, "gpt2 (encoder.json)");
  size_t blob = 0;
  json_object_foreach(j, k, v) blob += strlen(k);
  if (!t || !(t->blob = malloc(blob + 1))) {
    yk_data_tokenizer_destroy(t);
    rc = yk_errorf(d, YK_ENOMEM, "out of memory reading %s", path);
    goto out;
  }
  *tp = t;
  size_t bl = 0;
  json_object_foreach(j, k, v) {
    int id = (int)json_integer_value(v);
    size_t kl = strlen(k);
    if (t->has[id]) {
      rc = yk_errorf(d, YK_EFORMAT, "%s: id %d is given twice (\"%s\" and another key); the file is damaged", path, id, k);
      goto out;
    }
    long nb = unmap_symbols(t, k, kl, t->blob + bl);
    if (nb <= 0) {
      rc = yk_errorf(d, YK_EFORMAT, "%s: key \"%s\" (id %d) has a character outside GPT-2's byte alphabet; give "
                     "GPT-2's encoder.json", path, k, id);
      goto out;
    }
    int prc = map_put(&t->enc, k, kl, id);
    if (prc < 0) {
      rc = yk_errorf(d, YK_ENOMEM, "out of memory reading %s", path);
      goto out;
    }
    t->off[id] = bl;
    t->len[id] = (uint32_t)nb;
    t->has[id] = 1;
    bl += (size_t)nb;
  }
  t->eot = map_get(&t->enc, "<|endoftext|>", 13);
out:
  json_decref(j);
  return rc;
}

static int load_merges(yk_tokenizer *t, const char *path, yk_diag *d) {
  char *buf;
  size_t n;
  yk_diag sub = {0};
  int rc = yk_file_read(path, &buf, &n, &sub);
  if (rc) return yk_errorf(d, rc, "%s; give the path of GPT-2's vocab.bpe", yk_diag_msg(&sub, rc));
  int rank = 0, line = 0;
  for (char *s = buf, *e; s < buf + n && !rc; s = e + 1) {
    e = memchr(s, '\n', (size_t)(buf + n - s));
    if (!e) e = buf + n;
    line++;
    size_t len = (size_t)(e - s);
    if (len && s[len - 1] == '\r') len--;
    if (len == 0 || (line == 1 && !strncmp(s, "#version", 8))) continue;
    char *sp = memchr(s, ' ', len);
    if (!sp || sp == s || sp == s + len - 1 || memchr(sp + 1, ' ', len - (size_t)(sp + 1 - s))) {
      rc = yk_errorf(d, YK_EFORMAT, "%s: line %d \"%.*s\" is not a merge \"first second\"; give GPT-2's vocab.bpe", path,
                     line, (int)YK_MIN(len, (size_t)80), s);
      break;
    }
    int prc = map_put(&t->ranks, s, len, rank);
    if (prc < 0) rc = yk_errorf(d, YK_ENOMEM, "out of memory reading %s", path);
    else if (prc == 0) rank++; /* a repeated merge keeps its first rank */
  }
  free(buf);
  if (!rc && rank == 0) rc = yk_errorf(d, YK_EFORMAT, "%s has no merges; give GPT-2's vocab.bpe", path);
  return rc;
}

int yk_data_tokenizer_load_gpt2(const char *encoder_json, const char *vocab_bpe, yk_tokenizer **out, yk_diag *d) {
  *out = NULL;
  yk_tokenizer *t = NULL;
  int rc = load_encoder(&t, encoder_json, d);
  if (!rc) rc = load_merges(t, vocab_bpe, d);
  if (!rc) {
    t->can_encode = 1;
    *out = t;
  } else {
    yk_data_tokenizer_destroy(t);
  }
  return rc;
}

/* ---- use -------------------------------------------------------------------- */

int yk_data_tokenizer_vocab_size(const yk_tokenizer *t) { return t->vocab; }
int yk_data_tokenizer_eot(const yk_tokenizer *t) { return t->eot; }
int yk_data_tokenizer_can_encode(const yk_tokenizer *t) { return t->kind == TK_BYTE || t->can_encode; }
const char *yk_data_tokenizer_name(const yk_tokenizer *t) { return t->name; }

int yk_data_tokenizer_encode(const yk_tokenizer *t, const char *text, size_t n, int32_t **out, size_t *nout,
                             yk_diag *d) {
  *out = NULL;
  *nout = 0;
  tokvec v = {0};
  if (t->kind == TK_BYTE) {
    if (!(v.v = malloc((n ? n : 1) * sizeof *v.v))) return yk_errorf(d, YK_ENOMEM, "out of memory encoding %zu bytes", n);
    for (size_t i = 0; i < n; i++) v.v[i] = (uint8_t)text[i];
    *out = v.v;
    *nout = n;
    return 0;
  }
  if (!t->can_encode)
    return yk_errorf(d, YK_EUSAGE, "%s can only decode (it has no merges); give GPT-2's encoder.json and vocab.bpe to "
                     "encode text", t->name);
  bpe_work w = {0};
  int rc = 0;
  const unsigned char *s = (const unsigned char *)text;
  for (size_t i = 0; i < n && !rc;) {
    size_t e = pretok(s, n, i);
    rc = bpe_word(t, &w, s + i, e - i, &v, d);
    i = e;
  }
  free(w.u), free(w.sym), free(w.key);
  if (rc) {
    free(v.v);
    return rc;
  }
  if (!v.v && !(v.v = malloc(sizeof *v.v))) return yk_errorf(d, YK_ENOMEM, "out of memory");
  *out = v.v;
  *nout = v.n;
  return 0;
}

int yk_data_tokenizer_decode(const yk_tokenizer *t, int32_t tok, const char **bytes, size_t *len, yk_diag *d) {
  if (tok < 0 || tok >= t->vocab)
    return yk_errorf(d, YK_EINVAL, "token %d is outside the %s tokenizer's vocabulary [0, %d); use the tokenizer the "
                     "model was trained with", tok, t->name, t->vocab);
  if (t->kind == TK_BYTE) {
    static const char all[256] = {
#define B4(i) (char)(i), (char)(i + 1), (char)(i + 2), (char)(i + 3)
#define B16(i) B4(i), B4(i + 4), B4(i + 8), B4(i + 12)
#define B64(i) B16(i), B16(i + 16), B16(i + 32), B16(i + 48)
        B64(0), B64(64), B64(128), B64(192)
#undef B64
#undef B16
#undef B4
    };
    *bytes = all + tok;
    *len = 1;
    return 0;
  }
  if (!t->has[tok])
    return yk_errorf(d, YK_EINVAL, "token %d has no entry in the %s tokenizer's files; use the tokenizer the model was "
                     "trained with", tok, t->name);
  *bytes = t->blob + t->off[tok];
  *len = t->len[tok];
  return 0;
}
