/* test_tokenizer.c - the tokenizers (data/tokenizer.c) on small files this
 * test writes: an encoder.json of the 256 byte symbols plus a handful of
 * merges, its vocab.bpe, and the same vocabulary as an llm.c
 * gpt2_tokenizer.bin. Checks known segmentations (merges by rank, every
 * occurrence; GPT-2's pre-tokenizer: contractions, letters, digits, other
 * symbols, whitespace runs), encode/decode round trips, the .bin decoding
 * the same bytes as encoder.json, and one clear error per bad file. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "yk_data.h"

static char dir[256];
static char enc_path[300], bpe_path[300], bin_path[300];

/* GPT-2's bytes_to_unicode, written independently of the library: the
 * UTF-8 of byte b's character. */
static int sym(int b, char *out) {
  int self = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
  int cp = b;
  if (!self) {
    int k = 0;
    for (int x = 0; x < b; x++)
      if (!((x >= '!' && x <= '~') || (x >= 0xA1 && x <= 0xAC) || (x >= 0xAE && x <= 0xFF))) k++;
    cp = 256 + k;
  }
  if (cp < 0x80) {
    out[0] = (char)cp;
    return 1;
  }
  out[0] = (char)(0xC0 | (cp >> 6));
  out[1] = (char)(0x80 | (cp & 0x3F));
  return 2;
}

/* The merges in rank order; merge i makes token 256 + i. "Ġ" is the space. */
static const char *const merges[] = {"Ġ t", "h e", "Ġt he", "l l", "he ll", "hell o", "' t", "Ġ Ġ", "1 2"};
enum { NMERGE = 9, EOT = 256 + NMERGE, VOCAB = EOT + 1 };

/* The bytes of token i of the test vocabulary, into out; the length. */
static int token_bytes(int i, char *out) {
  if (i < 256) {
    out[0] = (char)i;
    return 1;
  }
  if (i == EOT) {
    memcpy(out, "<|endoftext|>", 13);
    return 13;
  }
  /* concatenate the merge's two halves, mapping "Ġ" back to a space */
  int n = 0;
  for (const char *s = merges[i - 256]; *s; s++) {
    if (*s == ' ') continue;
    if ((unsigned char)s[0] == 0xC4 && (unsigned char)s[1] == 0xA0) {
      out[n++] = ' ';
      s++;
    } else {
      out[n++] = *s;
    }
  }
  return n;
}

static void write_file(const char *path, const void *p, size_t n) {
  FILE *f = fopen(path, "wb");
  ck_assert_ptr_nonnull(f);
  ck_assert_uint_eq(fwrite(p, 1, n, f), n);
  fclose(f);
}

static void write_text(const char *path, const char *s) { write_file(path, s, strlen(s)); }

static void json_str(FILE *f, const char *s, size_t n) {
  fputc('"', f);
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)s[i];
    if (c == '"' || c == '\\') fprintf(f, "\\%c", c);
    else fputc(c, f);
  }
  fputc('"', f);
}

static void setup(void) {
  snprintf(dir, sizeof dir, "/tmp/yk_tok_XXXXXX");
  ck_assert_ptr_nonnull(mkdtemp(dir));
  snprintf(enc_path, sizeof enc_path, "%s/encoder.json", dir);
  snprintf(bpe_path, sizeof bpe_path, "%s/vocab.bpe", dir);
  snprintf(bin_path, sizeof bin_path, "%s/tokenizer.bin", dir);
  FILE *f = fopen(enc_path, "w");
  fprintf(f, "{");
  for (int b = 0; b < 256; b++) {
    char s[4];
    int n = sym(b, s);
    json_str(f, s, (size_t)n);
    fprintf(f, ": %d, ", b);
  }
  for (int i = 0; i < NMERGE; i++) {
    char s[32];
    size_t n = 0;
    for (const char *m = merges[i]; *m; m++)
      if (*m != ' ') s[n++] = *m;
    json_str(f, s, n);
    fprintf(f, ": %d, ", 256 + i);
  }
  fprintf(f, "\"<|endoftext|>\": %d}\n", EOT);
  fclose(f);
  f = fopen(bpe_path, "w");
  fprintf(f, "#version: 0.2\n");
  for (int i = 0; i < NMERGE; i++) fprintf(f, "%s\n", merges[i]);
  fclose(f);
  /* tokenizer.bin version 2 */
  unsigned char *bin = calloc(1, 1024 + VOCAB * 16);
  uint32_t h[4] = {YK_TOKENIZER_MAGIC, 2, VOCAB, EOT};
  memcpy(bin, h, sizeof h);
  size_t at = 1024;
  for (int i = 0; i < VOCAB; i++) {
    char tb[32];
    int n = token_bytes(i, tb);
    bin[at++] = (unsigned char)n;
    memcpy(bin + at, tb, (size_t)n);
    at += (size_t)n;
  }
  write_file(bin_path, bin, at);
  free(bin);
}

static void teardown(void) {
  char cmd[300];
  snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
  ck_assert_int_eq(system(cmd), 0);
}

static yk_tokenizer *load_gpt2(void) {
  yk_tokenizer *t;
  yk_diag d = {0};
  ck_assert_msg(yk_data_tokenizer_load_gpt2(enc_path, bpe_path, &t, &d) == 0, "%s", d.msg);
  return t;
}

static void expect(const yk_tokenizer *t, const char *text, const int32_t *want, size_t nwant) {
  int32_t *got;
  size_t n;
  yk_diag d = {0};
  ck_assert_msg(yk_data_tokenizer_encode(t, text, strlen(text), &got, &n, &d) == 0, "%s", d.msg);
  char g[256] = "", w[256] = "";
  for (size_t i = 0; i < n; i++) snprintf(g + strlen(g), sizeof g - strlen(g), "%d ", got[i]);
  for (size_t i = 0; i < nwant; i++) snprintf(w + strlen(w), sizeof w - strlen(w), "%d ", want[i]);
  ck_assert_msg(n == nwant && !memcmp(got, want, n * sizeof *got), "'%s': got [%s], want [%s]", text, g, w);
  free(got);
}

#define EXPECT(t, text, ...)                                   \
  do {                                                         \
    static const int32_t w_[] = {__VA_ARGS__};                 \
    expect(t, text, w_, sizeof w_ / sizeof w_[0]);             \
  } while (0)

START_TEST(test_known_segmentations) {
  yk_tokenizer *t = load_gpt2();
  ck_assert_int_eq(yk_data_tokenizer_vocab_size(t), VOCAB);
  ck_assert_int_eq(yk_data_tokenizer_eot(t), EOT);
  /* merges by rank: "h e" before "l l", then "he ll", "hell o" */
  EXPECT(t, "hello the", 261, 258);
  /* "Ġt he" needs the space: a word-initial "the" stays t + he */
  EXPECT(t, "the", 't', 257);
  /* every occurrence of the best pair merges in one pass */
  EXPECT(t, "hellohello", 261, 261);
  /* contractions are their own pre-token; "'t" has a merge */
  EXPECT(t, "don't", 'd', 'o', 'n', 262);
  EXPECT(t, "it's", 'i', 't', '\'', 's');
  /* letters, digits and other symbols are separate runs; one leading
   * space goes with the run after it */
  EXPECT(t, "x12 3", 'x', 264, ' ', '3');
  EXPECT(t, "Hi!! ok?", 'H', 'i', '!', '!', ' ', 'o', 'k', '?');
  /* a whitespace run keeps its last space for the next word: "a", "  "
   * (merged Ġ Ġ), " b"; a run at the end stays whole */
  EXPECT(t, "a   b", 'a', 263, ' ', 'b');
  EXPECT(t, "a  the", 'a', ' ', 258); /* " the" keeps its space: Ġthe */
  EXPECT(t, "a  ", 'a', 263);
  /* newlines: "\n" before a word is its own pre-token, not joined to it */
  EXPECT(t, "a\n\nb", 'a', '\n', '\n', 'b');
  /* " 12" is one pre-token: space + digits ("1 2" merges, the space does not) */
  EXPECT(t, " 12", ' ', 264);
  /* Latin-1 letters are letters: "café's" is "café" + "'s" */
  EXPECT(t, "caf\xc3\xa9's", 'c', 'a', 'f', 0xc3, 0xa9, '\'', 's');
  /* multiplication sign U+00D7 is a symbol, not a letter */
  EXPECT(t, "2\xc3\x97x", '2', 0xc3, 0x97, 'x');
  yk_data_tokenizer_destroy(t);
}
END_TEST

static void roundtrip(const yk_tokenizer *enc, const yk_tokenizer *dec, const char *text) {
  int32_t *tok;
  size_t n;
  yk_diag d = {0};
  ck_assert_msg(yk_data_tokenizer_encode(enc, text, strlen(text), &tok, &n, &d) == 0, "%s", d.msg);
  char out[512];
  size_t k = 0;
  for (size_t i = 0; i < n; i++) {
    const char *b;
    size_t len;
    ck_assert_msg(yk_data_tokenizer_decode(dec, tok[i], &b, &len, &d) == 0, "%s", d.msg);
    ck_assert_uint_lt(k + len, sizeof out);
    memcpy(out + k, b, len);
    k += len;
  }
  ck_assert_msg(k == strlen(text) && !memcmp(out, text, k), "round trip of '%s' gave '%.*s'", text, (int)k, out);
  free(tok);
}

START_TEST(test_roundtrips_and_bin) {
  yk_tokenizer *t = load_gpt2(), *b, *byte;
  yk_diag d = {0};
  ck_assert_msg(yk_data_tokenizer_load_bin(bin_path, &b, &d) == 0, "%s", d.msg);
  ck_assert_int_eq(yk_data_tokenizer_vocab_size(b), VOCAB);
  ck_assert_int_eq(yk_data_tokenizer_eot(b), EOT);
  ck_assert_int_eq(yk_data_tokenizer_can_encode(b), 0);
  ck_assert_msg(yk_data_tokenizer_byte(&byte, &d) == 0, "%s", d.msg);
  const char *texts[] = {"hello the world, hello again!", "  leading and trailing  ", "tabs\tand\r\nCRLF\n\n\n",
                         "don't we'll they're I'd you've", "caf\xc3\xa9 na\xc3\xafve \xe2\x82\xac" "5 \xe6\x97\xa5\xe6\x9c\xac",
                         "\x01\x02 control \x7f bytes \xff\xfe (not UTF-8)", "12345 67.89 1e10", ""};
  for (size_t i = 0; i < sizeof texts / sizeof *texts; i++) {
    roundtrip(t, t, texts[i]);
    roundtrip(t, b, texts[i]); /* the .bin decodes what encoder.json encodes */
    roundtrip(byte, byte, texts[i]);
  }
  /* every token of the .bin decodes to the bytes of encoder.json's entry */
  for (int i = 0; i < VOCAB; i++) {
    const char *x, *y;
    size_t nx, ny;
    ck_assert_int_eq(yk_data_tokenizer_decode(t, i, &x, &nx, &d), 0);
    ck_assert_int_eq(yk_data_tokenizer_decode(b, i, &y, &ny, &d), 0);
    ck_assert_msg(nx == ny && !memcmp(x, y, nx), "token %d differs", i);
  }
  /* decode-only: encoding is refused, saying what to give */
  int32_t *tok;
  size_t n;
  ck_assert_int_eq(yk_data_tokenizer_encode(b, "hi", 2, &tok, &n, &d), YK_EUSAGE);
  ck_assert_msg(strstr(d.msg, "encoder.json and vocab.bpe") != NULL, "%s", d.msg);
  ck_assert_int_eq(yk_data_tokenizer_decode(b, VOCAB, &(const char *){0}, &n, &d), YK_EINVAL);
  ck_assert_msg(strstr(d.msg, "token 266") != NULL, "%s", d.msg);
  /* byte tokenizer: 256 tokens, documents separated by token 0 */
  ck_assert_int_eq(yk_data_tokenizer_vocab_size(byte), 256);
  ck_assert_int_eq(yk_data_tokenizer_eot(byte), 0);
  yk_data_tokenizer_destroy(t);
  yk_data_tokenizer_destroy(b);
  yk_data_tokenizer_destroy(byte);
}
END_TEST

static void expect_bad_bin(const void *p, size_t n, const char *needle) {
  char path[300];
  snprintf(path, sizeof path, "%s/bad.bin", dir);
  write_file(path, p, n);
  yk_tokenizer *t = (yk_tokenizer *)1;
  yk_diag d = {0};
  int rc = yk_data_tokenizer_load_bin(path, &t, &d);
  ck_assert_int_eq(rc, YK_EFORMAT);
  ck_assert_ptr_null(t);
  ck_assert_msg(strstr(d.msg, needle) && strstr(d.msg, path), "wanted '%s' and the path in: %s", needle, d.msg);
}

START_TEST(test_bad_files) {
  char *good;
  size_t n;
  yk_diag d = {0};
  ck_assert_int_eq(yk_file_read(bin_path, &good, &n, &d), 0);
  expect_bad_bin(good, 100, "shorter than the 1024-byte header");
  uint32_t m = 12345;
  memcpy(good, &m, 4);
  expect_bad_bin(good, n, "magic 12345, expected 20240328");
  m = YK_TOKENIZER_MAGIC;
  memcpy(good, &m, 4);
  uint32_t v = 7;
  memcpy(good + 4, &v, 4);
  expect_bad_bin(good, n, "version 7, expected 1 or 2");
  v = 2;
  memcpy(good + 4, &v, 4);
  expect_bad_bin(good, n - 5, "truncated");
  good[1024] = 0;
  expect_bad_bin(good, n, "token 0 has length 0");
  good[1024] = 1;
  char *more = malloc(n + 3);
  memcpy(more, good, n);
  expect_bad_bin(more, n + 3, "3 bytes follow the last");
  free(more);
  free(good);
  /* missing file: names it */
  yk_tokenizer *t;
  char path[300];
  snprintf(path, sizeof path, "%s/nope.bin", dir);
  ck_assert_int_ne(yk_data_tokenizer_load_bin(path, &t, &d), 0);
  ck_assert_msg(strstr(d.msg, path) != NULL, "%s", d.msg);
  /* a vocab.bpe line that is not a merge */
  snprintf(path, sizeof path, "%s/bad.bpe", dir);
  write_text(path, "#version: 0.2\nh e\nhello\n");
  ck_assert_int_eq(yk_data_tokenizer_load_gpt2(enc_path, path, &t, &d), YK_EFORMAT);
  ck_assert_msg(strstr(d.msg, "line 3 \"hello\"") != NULL, "%s", d.msg);
  /* encoder.json that is not JSON, or has a character outside the byte alphabet */
  snprintf(path, sizeof path, "%s/bad.json", dir);
  write_text(path, "{\"a\": 1,");
  ck_assert_int_eq(yk_data_tokenizer_load_gpt2(path, bpe_path, &t, &d), YK_EFORMAT);
  ck_assert_msg(strstr(d.msg, path) != NULL, "%s", d.msg);
  write_text(path, "{\"a\": 0, \"\xe2\x82\xac\": 1}");
  ck_assert_int_eq(yk_data_tokenizer_load_gpt2(path, bpe_path, &t, &d), YK_EFORMAT);
  ck_assert_msg(strstr(d.msg, "outside GPT-2's byte alphabet") != NULL, "%s", d.msg);
  /* merges making a symbol encoder.json lacks: named when encoding */
  write_text(path, "{\"h\": 0, \"e\": 1}");
  ck_assert_int_eq(yk_data_tokenizer_load_gpt2(path, bpe_path, &t, &d), 0);
  int32_t *tok;
  ck_assert_int_eq(yk_data_tokenizer_encode(t, "he", 2, &tok, &n, &d), YK_EFORMAT);
  ck_assert_msg(strstr(d.msg, "'he'") != NULL, "%s", d.msg);
  yk_data_tokenizer_destroy(t);
}
END_TEST

int main(void) {
  Suite *s = suite_create("tokenizer");
  TCase *tc = tcase_create("tokenizer");
  tcase_add_checked_fixture(tc, setup, teardown);
  tcase_add_test(tc, test_known_segmentations);
  tcase_add_test(tc, test_roundtrips_and_bin);
  tcase_add_test(tc, test_bad_files);
  suite_add_tcase(s, tc);
  SRunner *sr = srunner_create(s);
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed ? 1 : 0;
}
