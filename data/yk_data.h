/* yk_data.h - the one public header of yoke's `data` module.
 *
 * What lives here:
 *   - token shards (docs/formats.md, "Token shard (version 1)"): a header of
 *     256 int32 (magic 20240520, version 1, token count) then that many
 *     uint16 tokens; read with mmap (validated), written atomically;
 *   - the tokenizers: the byte-level one of the quick-start models (vocab
 *     256, token = byte value) and GPT-2's BPE (llm.c's gpt2_tokenizer.bin
 *     for decoding, encoder.json + vocab.bpe for both ways);
 *   - `yoke data prepare`: text files -> byte-level train / val shards;
 *   - the batch loader: contiguous B*T+1-token windows over sorted shards,
 *     each data-parallel rank reading its own window per micro-batch by the
 *     rule in yk_partition.h, with a position that checkpoints save and
 *     restore exactly.
 * No global state; every object is owned by its caller.
 */
#ifndef YK_DATA_H
#define YK_DATA_H

#include "yk_common.h"

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define YK_SHARD_MAGIC 20240520
#define YK_SHARD_VERSION 1
#define YK_SHARD_HEADER_INTS 256
#define YK_SHARD_HEADER_BYTES (YK_SHARD_HEADER_INTS * 4)
/* Largest token count a header can hold (int32 field). */
#define YK_SHARD_MAX_TOKENS 2147483647ull

/* ------------------------------------------------------------------------ */
/* Token shards                                                             */
/* ------------------------------------------------------------------------ */

/* An open (memory-mapped, read-only) shard. */
typedef struct yk_data_shard {
  char path[1024];
  const uint16_t *tokens; /* ntok tokens, inside the mapping */
  uint64_t ntok;
  void *map; /* private: the mapping and its length */
  size_t map_len;
} yk_data_shard;

/* Open and validate a shard: magic, version, a token count >= 0, and a file
 * size of exactly 1024 + 2 * count bytes. vocab > 0 also checks every token
 * id is < vocab (one pass over the file); vocab <= 0 skips that pass. Each
 * error is YK_EFORMAT (YK_EIO / YK_ENOTFOUND for I/O) with a message naming
 * the file, the field, the expected and the found value. The caller owns *s
 * and releases it with yk_data_shard_close (also after a failed open: safe). */
int yk_data_shard_open(yk_data_shard *s, const char *path, int64_t vocab, yk_diag *d);
void yk_data_shard_close(yk_data_shard *s);

/* Write ntok tokens as a shard at path, atomically (path.tmp, fsync,
 * rename). YK_EINVAL if ntok > YK_SHARD_MAX_TOKENS. */
int yk_data_shard_write(const char *path, const uint16_t *tokens, uint64_t ntok, yk_diag *d);

/* ------------------------------------------------------------------------ */
/* Byte-level tokenizer                                                     */
/* ------------------------------------------------------------------------ */

#define YK_DATA_BYTE_VOCAB 256

/* out[i] = (uint8_t)text[i] for n bytes; out holds n tokens. */
void yk_data_bytes_encode(const void *text, size_t n, uint16_t *out);
/* out[i] = tokens[i] as a byte; YK_EINVAL (naming index and value) if a
 * token is >= 256. out holds n bytes (not NUL-terminated). */
int yk_data_bytes_decode(const uint16_t *tokens, size_t n, char *out, yk_diag *d);

/* ------------------------------------------------------------------------ */
/* Tokenizers (data/tokenizer.c)                                            */
/* ------------------------------------------------------------------------ */

/* llm.c's gpt2_tokenizer.bin (docs/formats.md, "GPT-2 tokenizer file"): a
 * header of 256 uint32 (magic, version 1 or 2, vocabulary size, EOT token in
 * version 2), then per token one uint8 length (1..255) and its bytes. */
#define YK_TOKENIZER_MAGIC 20240328
#define YK_TOKENIZER_HEADER_BYTES 1024

/* A tokenizer: byte-level (token = byte value, vocabulary 256; token 0,
 * byte NUL, separates documents) or GPT-2's byte-level BPE, either decode-only (from
 * gpt2_tokenizer.bin) or encode + decode (from encoder.json + vocab.bpe).
 * Read-only after loading, so one may be shared by threads. The caller owns
 * it: free with yk_data_tokenizer_destroy (NULL is fine). */
typedef struct yk_tokenizer yk_tokenizer;

int yk_data_tokenizer_byte(yk_tokenizer **out, yk_diag *d);
/* gpt2_tokenizer.bin: decoding only. A missing file is YK_ENOTFOUND / YK_EIO,
 * a bad one (short, wrong magic or version, a token of length 0, truncated,
 * bytes after the last token) YK_EFORMAT naming the path and the field. The
 * EOT token is the header's (version 2) or 50256 (version 1). */
int yk_data_tokenizer_load_bin(const char *path, yk_tokenizer **out, yk_diag *d);
/* GPT-2's encoder.json (token string -> id, in GPT-2's bytes_to_unicode
 * alphabet) and vocab.bpe (an optional "#version" line, then one merge
 * "first second" per line, rank = order): encoding and decoding. The
 * vocabulary is the largest id + 1; the EOT token is "<|endoftext|>"'s id
 * (-1 if absent). Errors as above, naming the file, line or key. */
int yk_data_tokenizer_load_gpt2(const char *encoder_json, const char *vocab_bpe, yk_tokenizer **out, yk_diag *d);
void yk_data_tokenizer_destroy(yk_tokenizer *t);

int yk_data_tokenizer_vocab_size(const yk_tokenizer *t);
/* The end-of-text token, which separates documents in shards: 0 for the
 * byte-level tokenizer, GPT-2's <|endoftext|>; -1 when the files give none. */
int yk_data_tokenizer_eot(const yk_tokenizer *t);
/* 1 if yk_data_tokenizer_encode works (not for a decode-only .bin). */
int yk_data_tokenizer_can_encode(const yk_tokenizer *t);
/* "byte", "gpt2 (tokenizer.bin)" or "gpt2 (encoder.json)", for messages. */
const char *yk_data_tokenizer_name(const yk_tokenizer *t);
/* text[0..n) -> *out (malloc'd, the caller frees it), *nout tokens. GPT-2:
 * GPT-2's pre-tokenizer (contractions, letters, digits, other symbols,
 * whitespace; its character classes are exact for ASCII and Latin text),
 * then BPE merges by rank; special tokens in the text are not recognised
 * (<|endoftext|> is encoded as its characters). YK_EUSAGE for a
 * decode-only tokenizer, YK_EFORMAT when merges make a symbol that
 * encoder.json lacks. */
int yk_data_tokenizer_encode(const yk_tokenizer *t, const char *text, size_t n, int32_t **out, size_t *nout,
                             yk_diag *d);
/* The bytes of one token: *bytes (owned by t, valid until destroy), *len.
 * YK_EINVAL naming the token for one outside the vocabulary or without an
 * entry. A token's bytes may be part of a UTF-8 character: decode a
 * sequence by concatenating. */
int yk_data_tokenizer_decode(const yk_tokenizer *t, int32_t tok, const char **bytes, size_t *len, yk_diag *d);

/* ------------------------------------------------------------------------ */
/* Batch loader                                                             */
/* ------------------------------------------------------------------------ */

/* Use in a data-parallel train loop (world ranks, accum micro-batches):
 *
 *   yk_data_loader_open(&tr, "data.train", cfg.data.train, B, T, V, &d);
 *   for each step: for (m = 0; m < accum; m++) {
 *                    yk_data_loader_next(tr, world, accum, rank, m, inputs, targets);
 *                    forward/backward ... }
 *                  all-reduce, optimizer step;
 *                  yk_data_loader_advance(tr, world, accum);
 *   checkpoint: yk_data_loader_get_pos(tr, &pos) ... yk_data_loader_set_pos(tr, &pos, &d)
 *
 * Validation (no position): batch i of rank r reads yk_data_loader_window(va, i * world + r, ...),
 * so val batches 0..n-1 are split over ranks without overlap (wrapping when
 * the val set has fewer than n * world windows). */

/* Opaque: the open shards, the window index and the position. */
typedef struct yk_data_loader yk_data_loader;

/* The loader position, a plain struct that checkpoints store verbatim.
 * windows_done counts sequence numbers consumed by completed optimizer steps,
 * over all ranks (it grows past the epoch: epoch = windows_done / W). The
 * other fields identify what it counts, so a restore into a loader with a
 * different window size or data is refused instead of silently misread. */
typedef struct yk_data_pos {
  uint64_t windows_done;
  uint64_t window_tokens;     /* B*T */
  uint64_t epoch_windows;     /* W */
  uint64_t total_tokens;      /* tokens over all shards */
} yk_data_pos;

/* Open every shard matching `pattern` (a path or a glob, matches sorted by
 * byte-wise path order) for windows of B*T tokens, validating each (vocab as
 * in yk_data_shard_open). `what` names the source in messages (e.g.
 * "data.train"). Errors: YK_ENOTFOUND when nothing matches, YK_EFORMAT for a
 * bad shard, YK_ECONFIG when the shards hold no complete window (message says
 * how many tokens are needed). Position starts at 0. Caller frees with
 * yk_data_loader_close. */
int yk_data_loader_open(yk_data_loader **out, const char *what, const char *pattern, int64_t B, int64_t T,
                        int64_t vocab, yk_diag *d);
void yk_data_loader_close(yk_data_loader *ld);

int64_t yk_data_loader_B(const yk_data_loader *ld);
int64_t yk_data_loader_T(const yk_data_loader *ld);
/* W, the number of windows in one epoch. */
uint64_t yk_data_loader_epoch_windows(const yk_data_loader *ld);
uint64_t yk_data_loader_total_tokens(const yk_data_loader *ld);
int yk_data_loader_shard_count(const yk_data_loader *ld);
/* Path of shard i (sorted order); valid until close. NULL if out of range. */
const char *yk_data_loader_shard_path(const yk_data_loader *ld, int i);

/* Random access: the B*T+1 tokens of sequence number q (window q % W),
 * inside the mapping, valid until close. Row b of the batch is
 * inputs = p[b*T .. b*T+T), targets = p[b*T+1 .. b*T+T+1). */
const uint16_t *yk_data_loader_window_tokens(const yk_data_loader *ld, uint64_t q);
/* Same, widened: inputs and targets are (B, T) int32, row-major; either may
 * be NULL. Which shard/offset it came from goes to *shard / *token_off when
 * non-NULL (for logs). */
void yk_data_loader_window(const yk_data_loader *ld, uint64_t q, int32_t *inputs, int32_t *targets, int *shard,
                           uint64_t *token_off);

/* Check a data-parallel split before training: YK_ECONFIG (message names
 * the numbers and what to change) if world < 1, accum < 1, or one step's
 * world*accum windows exceed the W windows of an epoch (a step would then
 * read a window twice). */
int yk_data_loader_check_split(const yk_data_loader *ld, int world, int accum, yk_diag *d);

/* Training use, one call per micro-batch: fill inputs/targets ((B, T)
 * int32) with the window of micro-batch `micro` of `rank` in the current
 * step, q = windows_done + micro*world + rank (yk_partition_data_window).
 * Does not move the position. YK_EINVAL if rank/micro are out of range. */
int yk_data_loader_next(const yk_data_loader *ld, int world, int accum, int rank, int micro, int32_t *inputs,
                        int32_t *targets);
/* End of an optimizer step: windows_done += world * accum. Every rank calls
 * it with the same arguments, so all ranks hold the same position. */
void yk_data_loader_advance(yk_data_loader *ld, int world, int accum);
/* Current epoch (windows_done / W). */
uint64_t yk_data_loader_epoch(const yk_data_loader *ld);

void yk_data_loader_get_pos(const yk_data_loader *ld, yk_data_pos *pos);
/* The position counts sequence numbers, not steps, so it does not depend on
 * world or accum: a run may resume with another split (or world size) and
 * continue exactly after the last window consumed. */
/* Restore a saved position. YK_EMISMATCH (naming both values) if the saved
 * window size, epoch size or token total differ from this loader's: resume
 * with the same data and the same train.micro_batch * train.seq_len. */
int yk_data_loader_set_pos(yk_data_loader *ld, const yk_data_pos *pos, yk_diag *d);

/* ------------------------------------------------------------------------ */
/* `yoke data prepare` and `yoke data info` (command lines in cli/)         */
/* ------------------------------------------------------------------------ */

typedef struct yk_data_prepare_opts {
  const char *out;        /* output directory (default "data"): DIR/train_NNN.bin, DIR/val_NNN.bin; shards of
                             an earlier run there are removed first */
  double val_fraction;    /* in [0, 1) (default 0.1): the last fraction of every document goes to val; 0: no val */
  int64_t shard_tokens;   /* at most this many tokens per shard file, in [1, YK_SHARD_MAX_TOKENS] (default 1e8) */
  int64_t min_tokens;     /* refuse input giving fewer train tokens than this (default: one training window,
                             micro_batch x seq_len + 1 at the config's defaults; 1: refuse only no text) */
  char *const *inputs;    /* ninputs text files or globs (expanded here, sorted by path) */
  int ninputs;
  const yk_tokenizer *tokenizer; /* borrowed; NULL (default): byte-level. GPT-2 needs one that can encode */
} yk_data_prepare_opts;

/* The defaults above, no inputs. */
void yk_data_prepare_opts_default(yk_data_prepare_opts *o);

typedef struct yk_data_prepare_result {
  size_t files;           /* files read */
  size_t duplicates;      /* paths skipped because they name a file already read (symlinks, hard links) */
  size_t bytes;           /* bytes read */
  size_t train_tokens, val_tokens;
  int train_shards, val_shards;
} yk_data_prepare_result;

/* Text files -> train / val shards: byte-level (vocabulary 256; each
 * document starts with token 0) or with o->tokenizer (each document starts
 * with its end-of-text token, as llm.c's GPT-2 shards). Deterministic: inputs are sorted and read
 * once each; empty files add nothing. YK_EINVAL (an option out of range, a
 * glob matching nothing, a directory given as a file: the caller's command
 * line is wrong), YK_EFORMAT (a file with a NUL byte, no text at all, fewer
 * than min_tokens train tokens: named in d), YK_EIO, YK_ENOMEM. */
int yk_data_prepare(const yk_data_prepare_opts *o, yk_data_prepare_result *res, yk_diag *d);

typedef struct yk_data_info_opts {
  int64_t vocab;          /* > 0: also require every token id < vocab (at most 65536); 0 (default): any */
  char *const *inputs;    /* ninputs shard files or globs */
  int ninputs;
} yk_data_info_opts;

/* Validate the shards and print one line each to out (path, token count,
 * largest id and, for byte-level shards, the first bytes as text) and a
 * total. YK_EINVAL for a glob matching nothing or no input; a bad shard's
 * error (yk_data_shard_open) stops it. */
int yk_data_info_print(const yk_data_info_opts *o, FILE *out, yk_diag *d);

#ifdef __cplusplus
}
#endif
#endif /* YK_DATA_H */
