/* shard.c - token shard files (docs/formats.md "Token shard (version 1)")
 * and the byte-level tokenizer. */
#include "yk_data.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

void yk_data_shard_close(yk_data_shard *s) {
  if (!s) return;
  if (s->map && s->map != MAP_FAILED) munmap(s->map, s->map_len);
  s->map = NULL;
  s->map_len = 0;
  s->tokens = NULL;
  s->ntok = 0;
}

int yk_data_shard_open(yk_data_shard *s, const char *path, int64_t vocab, yk_diag *d) {
  memset(s, 0, sizeof *s);
  snprintf(s->path, sizeof s->path, "%s", path);
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return yk_errorf_sys(d, errno == ENOENT ? YK_ENOTFOUND : YK_EIO, "token shard %s: cannot open", path);
  struct stat st;
  if (fstat(fd, &st) != 0) {
    int rc = yk_errorf_sys(d, YK_EIO, "token shard %s: cannot stat", path);
    close(fd);
    return rc;
  }
  if (!S_ISREG(st.st_mode)) {
    close(fd);
    return yk_errorf(d, YK_EFORMAT, "token shard %s: not a regular file", path);
  }
  uint64_t size = (uint64_t)st.st_size;
  if (size < YK_SHARD_HEADER_BYTES) {
    close(fd);
    return yk_errorf(d, YK_EFORMAT,
                     "token shard %s: file size %llu bytes, expected at least the %d-byte header (truncated or not a "
                     "token shard)",
                     path, (unsigned long long)size, YK_SHARD_HEADER_BYTES);
  }
  void *map = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
  close(fd);
  if (map == MAP_FAILED) return yk_errorf_sys(d, YK_EIO, "token shard %s: mmap of %llu bytes failed", path,
                                              (unsigned long long)size);
  s->map = map;
  s->map_len = size;
  int32_t h[3]; /* copied: messages below are formatted after the unmap */
  memcpy(h, map, sizeof h);
  if (h[0] != YK_SHARD_MAGIC) {
    yk_data_shard_close(s);
    return yk_errorf(d, YK_EFORMAT, "token shard %s: header magic %d, expected %d (not a token shard)", path, h[0],
                     YK_SHARD_MAGIC);
  }
  if (h[1] != YK_SHARD_VERSION) {
    yk_data_shard_close(s);
    return yk_errorf(d, YK_EFORMAT, "token shard %s: header version %d, expected %d (uint16 tokens)", path, h[1],
                     YK_SHARD_VERSION);
  }
  if (h[2] < 0) {
    yk_data_shard_close(s);
    return yk_errorf(d, YK_EFORMAT, "token shard %s: header token count %d, expected >= 0", path, h[2]);
  }
  uint64_t ntok = (uint64_t)h[2];
  uint64_t want = YK_SHARD_HEADER_BYTES + 2 * ntok;
  if (size != want) {
    yk_data_shard_close(s);
    return yk_errorf(d, YK_EFORMAT,
                     "token shard %s: file size %llu bytes, expected %llu (1024-byte header + 2 x token count %llu); "
                     "the file is %s",
                     path, (unsigned long long)size, (unsigned long long)want, (unsigned long long)ntok,
                     size < want ? "truncated" : "longer than its header says");
  }
  s->tokens = (const uint16_t *)((const char *)map + YK_SHARD_HEADER_BYTES);
  s->ntok = ntok;
  if (vocab > 0) {
    /* one sequential pass; find the first bad id only when one exists */
    uint16_t mx = 0;
    for (uint64_t i = 0; i < ntok; i++) mx = s->tokens[i] > mx ? s->tokens[i] : mx;
    if ((int64_t)mx >= vocab) {
      uint64_t i = 0;
      while ((int64_t)s->tokens[i] < vocab) i++;
      int rc = yk_errorf(d, YK_EFORMAT,
                         "token shard %s: token %llu has id %u, expected < the model vocabulary size %lld (shard made "
                         "for another tokenizer?)",
                         path, (unsigned long long)i, (unsigned)s->tokens[i], (long long)vocab);
      yk_data_shard_close(s);
      return rc;
    }
  }
  return 0;
}

static int write_all(int fd, const void *buf, size_t len) {
  const char *p = buf;
  while (len) {
    ssize_t w = write(fd, p, len);
    if (w < 0) {
      if (errno == EINTR) continue;
      return -1;
    }
    p += w;
    len -= (size_t)w;
  }
  return 0;
}

int yk_data_shard_write(const char *path, const uint16_t *tokens, uint64_t ntok, yk_diag *d) {
  if (ntok > YK_SHARD_MAX_TOKENS)
    return yk_errorf(d, YK_EINVAL, "token shard %s: %llu tokens, at most %llu fit in one shard; split it", path,
                     (unsigned long long)ntok, YK_SHARD_MAX_TOKENS);
  char tmp[1100];
  if (snprintf(tmp, sizeof tmp, "%s.tmp", path) >= (int)sizeof tmp)
    return yk_errorf(d, YK_EINVAL, "token shard path too long: %s", path);
  int32_t header[YK_SHARD_HEADER_INTS] = {0};
  header[0] = YK_SHARD_MAGIC;
  header[1] = YK_SHARD_VERSION;
  header[2] = (int32_t)ntok;
  int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return yk_errorf_sys(d, YK_EIO, "token shard %s: cannot create", tmp);
  if (write_all(fd, header, sizeof header) || write_all(fd, tokens, ntok * 2) || fsync(fd)) {
    int rc = yk_errorf_sys(d, YK_EIO, "token shard %s: write failed", tmp);
    close(fd);
    unlink(tmp);
    return rc;
  }
  close(fd);
  if (rename(tmp, path) != 0) {
    int rc = yk_errorf_sys(d, YK_EIO, "token shard %s: rename from %s failed", path, tmp);
    unlink(tmp);
    return rc;
  }
  /* make the rename durable */
  char dir[1100];
  snprintf(dir, sizeof dir, "%s", path);
  int dfd = open(dirname(dir), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    fsync(dfd);
    close(dfd);
  }
  return 0;
}

void yk_data_bytes_encode(const void *text, size_t n, uint16_t *out) {
  const unsigned char *b = text;
  for (size_t i = 0; i < n; i++) out[i] = b[i];
}

int yk_data_bytes_decode(const uint16_t *tokens, size_t n, char *out, yk_diag *d) {
  for (size_t i = 0; i < n; i++) {
    if (tokens[i] >= YK_DATA_BYTE_VOCAB)
      return yk_errorf(d, YK_EINVAL, "token %zu has id %u, not a byte (byte-level vocabulary is 0..255)", i,
                       (unsigned)tokens[i]);
    out[i] = (char)(unsigned char)tokens[i];
  }
  return 0;
}
