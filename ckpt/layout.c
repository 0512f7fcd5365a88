/* layout.c - the checkpoint's on-disk layout, shared by the writer and the
 * reader (docs/checkpoint-format.md): the names of step directories and
 * shard files, the hex form of checksums, the shard file's fixed header and
 * trailer and its index, the manifest's load and check, and which
 * directories of a root are checkpoints (yk_ckpt_list). */
#define _GNU_SOURCE
#include "ckpt_internal.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

/* ---- names and numbers ---- */

void ck_step_dir(char *buf, size_t cap, const char *root, int64_t step, int partial) {
  snprintf(buf, cap, "%s/step-%08lld%s", root, (long long)step, partial ? ".partial" : "");
}

void ck_shard_name(char *buf, size_t cap, int rank, int world) {
  snprintf(buf, cap, "shard-%05d-of-%05d.yks", rank, world);
}

void ck_hex(char out[17], uint64_t v) { snprintf(out, 17, "%016llx", (unsigned long long)v); }

uint64_t ck_hex_parse(const char *s, int *ok) {
  uint64_t v = 0;
  *ok = 0;
  if (!s || strlen(s) != 16) return 0;
  for (int i = 0; i < 16; i++) {
    char c = s[i];
    int x = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
    if (x < 0) return 0;
    v = v << 4 | (uint64_t)x;
  }
  *ok = 1;
  return v;
}

void ck_put64(uint8_t *p, uint64_t v) {
  for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i));
}

uint64_t ck_get64(const uint8_t *p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; i--) v = v << 8 | p[i];
  return v;
}

int ck_pread_all(int fd, void *buf, size_t len, uint64_t off) {
  uint8_t *p = buf;
  while (len) {
    ssize_t r = pread(fd, p, len, (off_t)off);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return -1;
    p += r;
    len -= (size_t)r;
    off += (uint64_t)r;
  }
  return 0;
}

/* ---- shard header and trailer ---- */

void ck_shard_header_put(uint8_t hdr[CK_HEADER_BYTES], int rank, int world, int64_t step) {
  memset(hdr, 0, CK_HEADER_BYTES);
  memcpy(hdr, CK_SHARD_MAGIC, 8);
  ck_put64(hdr + 8, YK_CKPT_FORMAT_VERSION);
  ck_put64(hdr + 16, (uint64_t)rank);
  ck_put64(hdr + 24, (uint64_t)world);
  ck_put64(hdr + 32, (uint64_t)step);
}

void ck_shard_trailer_put(uint8_t tr[CK_TRAILER_BYTES], uint64_t index_off, uint64_t index_len, uint64_t index_sum,
                          uint64_t file_sum) {
  ck_put64(tr, index_off);
  ck_put64(tr + 8, index_len);
  ck_put64(tr + 16, index_sum);
  ck_put64(tr + 24, file_sum);
  memcpy(tr + 32, CK_TRAILER_MAGIC, 8);
}

int ck_shard_trailer_get(const uint8_t tr[CK_TRAILER_BYTES], uint64_t *index_off, uint64_t *index_len,
                         uint64_t *index_sum, uint64_t *file_sum) {
  if (memcmp(tr + 32, CK_TRAILER_MAGIC, 8)) return -1;
  *index_off = ck_get64(tr);
  *index_len = ck_get64(tr + 8);
  *index_sum = ck_get64(tr + 16);
  *file_sum = ck_get64(tr + 24);
  return 0;
}

/* ---- shard index ---- */

int ck_read_shard_index(const char *path, json_t **index, uint64_t *size, uint64_t *file_sum, yk_diag *d) {
  *index = NULL;
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return yk_errorf_sys(d, errno == ENOENT ? YK_ENOTFOUND : YK_EIO, "cannot open shard '%s'", path);
  struct stat sb;
  int rc = 0;
  uint8_t hdr[CK_HEADER_BYTES], tr[CK_TRAILER_BYTES];
  if (fstat(fd, &sb) != 0) {
    rc = yk_errorf_sys(d, YK_EIO, "cannot stat '%s'", path);
    goto out;
  }
  uint64_t sz = (uint64_t)sb.st_size;
  *size = sz;
  if (sz < CK_HEADER_BYTES + CK_TRAILER_BYTES || ck_pread_all(fd, hdr, sizeof hdr, 0) ||
      ck_pread_all(fd, tr, sizeof tr, sz - CK_TRAILER_BYTES)) {
    rc = yk_errorf(d, YK_ECORRUPT, "shard '%s' is truncated (%llu bytes)", path, (unsigned long long)sz);
    goto out;
  }
  uint64_t ioff, ilen, isum;
  if (memcmp(hdr, CK_SHARD_MAGIC, 8) || ck_shard_trailer_get(tr, &ioff, &ilen, &isum, file_sum)) {
    rc = yk_errorf(d, YK_ECORRUPT, "shard '%s': bad magic in the %s (truncated or not a yoke shard)", path,
                   memcmp(hdr, CK_SHARD_MAGIC, 8) ? "header" : "trailer");
    goto out;
  }
  if (ioff < CK_HEADER_BYTES || ilen > sz || ioff + ilen + CK_TRAILER_BYTES != sz || ilen > (256u << 20)) {
    rc = yk_errorf(d, YK_ECORRUPT, "shard '%s': index location %llu+%llu does not fit the file of %llu bytes", path,
                   (unsigned long long)ioff, (unsigned long long)ilen, (unsigned long long)sz);
    goto out;
  }
  char *txt = malloc(ilen + 1);
  if (!txt) {
    rc = yk_errorf(d, YK_ENOMEM, "out of memory");
    goto out;
  }
  if (ck_pread_all(fd, txt, ilen, ioff)) {
    free(txt);
    rc = yk_errorf_sys(d, YK_EIO, "cannot read the index of '%s'", path);
    goto out;
  }
  txt[ilen] = 0;
  if (XXH3_64bits(txt, ilen) != isum) {
    free(txt);
    rc = yk_errorf(d, YK_ECORRUPT, "shard '%s': index checksum mismatch", path);
    goto out;
  }
  json_error_t je;
  *index = json_loadb(txt, ilen, 0, &je);
  free(txt);
  if (!*index || !json_is_array(json_object_get(*index, "arenas"))) {
    json_decref(*index);
    *index = NULL;
    rc = yk_errorf(d, YK_EFORMAT, "shard '%s': index is not valid: %s", path, je.text);
  }
out:
  close(fd);
  return rc;
}

/* ---- layout and splits ---- */

json_t *ck_layout_json(const yk_layout *l, int sequence) {
  return json_pack("{s:i, s:i, s:i, s:i, s:b}", "world", l->dp * l->tp * l->pp, "dp", l->dp, "tp", l->tp, "pp", l->pp,
                   "sequence", sequence ? 1 : 0);
}

int ck_layout_parse(json_t *j, int world, yk_layout *l, int *sequence) {
  memset(l, 0, sizeof *l);
  *sequence = 0;
  l->world = l->dp = world;
  l->tp = l->pp = 1;
  if (!j) return 0;
  json_int_t dp = json_integer_value(json_object_get(j, "dp")), tp = json_integer_value(json_object_get(j, "tp"));
  json_int_t pp = json_integer_value(json_object_get(j, "pp"));
  if (!json_is_object(j) || dp < 1 || tp < 1 || pp < 1 || dp * tp * pp > (1 << 24)) return -1;
  l->dp = (int)dp;
  l->tp = (int)tp;
  l->pp = (int)pp;
  l->world = l->dp * l->tp * l->pp;
  *sequence = json_is_true(json_object_get(j, "sequence"));
  return 0;
}

static const char *const split_names[] = {"replicated", "column", "row", "vocab"};

const char *ck_split_name(int split) {
  return split >= 0 && split < (int)YK_ARRAY_LEN(split_names) ? split_names[split] : "?";
}

void ck_split_put(json_t *t, const yk_tensor_desc *td) {
  if (td->split <= YK_SPLIT_REPLICATED || td->split > YK_SPLIT_VOCAB) return;
  json_object_set_new(t, "split", json_string(split_names[td->split]));
  if (td->split_parts > 1) json_object_set_new(t, "split_parts", json_integer(td->split_parts));
}

int ck_split_get(json_t *t, yk_tensor_desc *td) {
  const char *s = json_string_value(json_object_get(t, "split"));
  json_int_t parts = json_integer_value(json_object_get(t, "split_parts"));
  td->split = YK_SPLIT_REPLICATED;
  td->split_parts = parts > 1 && parts < (1 << 16) ? (int)parts : 0;
  if (!s) return 0;
  for (int k = 0; k < (int)YK_ARRAY_LEN(split_names); k++)
    if (!strcmp(s, split_names[k])) {
      td->split = k;
      return 0;
    }
  return -1;
}

/* ---- manifest ---- */

int ck_load_manifest(const char *dir, char **text, json_t **out, yk_diag *d) {
  char path[4200];
  snprintf(path, sizeof path, "%s/%s", dir, CK_MANIFEST);
  char *txt;
  size_t len;
  *out = NULL;
  *text = NULL;
  struct stat sb;
  if (stat(path, &sb) != 0)
    return yk_errorf(d, YK_ENOTFOUND, "'%s' has no %s: not a committed checkpoint", dir, CK_MANIFEST);
  int rc = yk_file_read(path, &txt, &len, d);
  if (rc) return rc;
  char *key = NULL;
  for (char *p = strstr(txt, CK_MANIFEST_SUM_KEY); p; p = strstr(p + 1, CK_MANIFEST_SUM_KEY)) key = p;
  if (!key) {
    free(txt);
    return yk_errorf(d, YK_ECORRUPT, "%s: no manifest_xxh3 checksum (truncated or not a yoke manifest)", path);
  }
  uint64_t sum = XXH3_64bits(txt, (size_t)(key - txt));
  json_error_t je;
  json_t *m = json_loadb(txt, len, 0, &je);
  if (!m) {
    rc = yk_errorf(d, YK_ECORRUPT, "%s: not valid JSON at line %d: %s", path, je.line, je.text);
    free(txt);
    return rc;
  }
  int ok;
  uint64_t want = ck_hex_parse(json_string_value(json_object_get(m, "manifest_xxh3")), &ok);
  if (!ok || want != sum) {
    json_decref(m);
    free(txt);
    return yk_errorf(d, YK_ECORRUPT, "%s: manifest checksum mismatch (the file was modified or damaged)", path);
  }
  const char *fmt = json_string_value(json_object_get(m, "format"));
  json_int_t ver = json_integer_value(json_object_get(m, "version"));
  /* Version 2 only adds to version 1 (the layout, split kinds, arenas
   * saved by a group of the shards), so version 1 reads as it always did. */
  if (!fmt || strcmp(fmt, "yoke-checkpoint") || ver < 1 || ver > YK_CKPT_FORMAT_VERSION) {
    json_decref(m);
    free(txt);
    return yk_errorf(d, YK_EFORMAT, "%s: format '%s' version %lld, this yoke reads yoke-checkpoint versions 1 to %d",
                     path, fmt ? fmt : "?", (long long)ver, YK_CKPT_FORMAT_VERSION);
  }
  *out = m;
  *text = txt;
  return 0;
}


/* ---- listing ---- */

static uint64_t dir_bytes(const char *dir) {
  uint64_t total = 0;
  DIR *dh = opendir(dir);
  if (!dh) return 0;
  struct dirent *de;
  while ((de = readdir(dh))) {
    char p[4400];
    struct stat sb;
    snprintf(p, sizeof p, "%s/%s", dir, de->d_name);
    if (stat(p, &sb) == 0 && S_ISREG(sb.st_mode)) total += (uint64_t)sb.st_size;
  }
  closedir(dh);
  return total;
}

static int cmp_entry(const void *a, const void *b) {
  const yk_ckpt_entry *x = a, *y = b;
  if (x->step != y->step) return x->step < y->step ? -1 : 1;
  return strcmp(x->path, y->path);
}

int yk_ckpt_list(const char *dir, yk_ckpt_entry **out, int *n, yk_diag *d) {
  *out = NULL;
  *n = 0;
  DIR *dh = opendir(dir);
  if (!dh) return yk_errorf_sys(d, errno == ENOENT ? YK_ENOTFOUND : YK_EIO, "cannot open checkpoint directory '%s'", dir);
  size_t cap = 16, cnt = 0;
  yk_ckpt_entry *e = malloc(cap * sizeof *e);
  struct dirent *de;
  while (e && (de = readdir(dh))) {
    long long step;
    int used = 0;
    if (sscanf(de->d_name, "step-%lld%n", &step, &used) != 1 || step < 0) continue;
    const char *rest = de->d_name + used;
    int partial = !strcmp(rest, ".partial");
    if (*rest && !partial) continue;
    if (cnt == cap) {
      cap *= 2;
      yk_ckpt_entry *ne = realloc(e, cap * sizeof *e);
      if (!ne) break;
      e = ne;
    }
    yk_ckpt_entry *x = &e[cnt++];
    memset(x, 0, sizeof *x);
    snprintf(x->path, sizeof x->path, "%s/%s", dir, de->d_name);
    x->step = step;
    x->bytes = dir_bytes(x->path);
    if (!partial) {
      char *txt;
      json_t *m;
      if (ck_load_manifest(x->path, &txt, &m, NULL) == 0) {
        x->world = (int)json_integer_value(json_object_get(m, "world"));
        /* A manifest whose shard files are not all there cannot be loaded:
         * `ckpt ls` must not call it latest (the reader would refuse it). */
        x->committed = 1;
        for (int r = 0; r < x->world && x->committed; r++) {
          char sp[4200], nm[64];
          struct stat sb;
          ck_shard_name(nm, sizeof nm, r, x->world);
          snprintf(sp, sizeof sp, "%s/%s", x->path, nm);
          if (stat(sp, &sb) != 0) x->committed = 0;
        }
        json_decref(m);
        free(txt);
      }
    }
  }
  closedir(dh);
  if (!e) return yk_errorf(d, YK_ENOMEM, "out of memory");
  qsort(e, cnt, sizeof *e, cmp_entry);
  *out = e;
  *n = (int)cnt;
  return 0;
}
