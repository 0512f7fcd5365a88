/* state.c - the registry of what a rank checkpoints: arenas by pointer,
 * blobs and manifest sections by value. */
#include "ckpt_internal.h"

#include <stdlib.h>
#include <string.h>

int yk_ckpt_state_create(yk_ckpt_state **out) {
  *out = calloc(1, sizeof **out);
  return *out ? 0 : YK_ENOMEM;
}

void yk_ckpt_state_free(yk_ckpt_state *s) {
  if (!s) return;
  for (int i = 0; i < s->narenas; i++) free(s->arenas[i].tensors);
  for (int i = 0; i < s->nblobs; i++) free(s->blobs[i].data);
  free(s->arenas);
  free(s->blobs);
  free(s->model_json);
  free(s->layout_json);
  free(s->config_yaml);
  free(s);
}

static int valid_name(const char *n, size_t max) {
  size_t l = n ? strlen(n) : 0;
  if (l == 0 || l > max) return 0;
  for (size_t i = 0; i < l; i++)
    if ((unsigned char)n[i] < 0x20 || n[i] == '"' || n[i] == '\\' || n[i] == '/') return 0;
  return 1;
}

static int add_arena(yk_ckpt_state *s, const char *name, yk_dtype dtype, void *data, yk_ckpt_fill_fn fill,
                     void *fill_ctx, uint64_t numel, uint64_t lo, uint64_t len, int grank, int gsize,
                     const yk_tensor_desc *tensors, int ntensors, yk_diag *d) {
  if (gsize < 0 || (gsize > 0 && (grank < 0 || grank >= gsize)))
    return yk_errorf(d, YK_EINVAL, "arena '%s': saving group rank %d of %d is not valid", name ? name : "(null)",
                     grank, gsize);
  if (lo > numel || len > numel - lo)
    return yk_errorf(d, YK_EINVAL, "arena '%s': part [%llu, +%llu) is outside its %llu elements", name,
                     (unsigned long long)lo, (unsigned long long)len, (unsigned long long)numel);
  if (!valid_name(name, 47))
    return yk_errorf(d, YK_EINVAL, "arena name '%s' is empty, longer than 47 characters or has '\"', '\\', '/'",
                     name ? name : "(null)");
  if ((int)dtype < 0 || dtype >= YK_DT_COUNT_) return yk_errorf(d, YK_EINVAL, "arena '%s': bad dtype %d", name, dtype);
  if (!data && !fill && numel) return yk_errorf(d, YK_EINVAL, "arena '%s': data is NULL for %llu elements", name,
                                       (unsigned long long)numel);
  if (ntensors < 0 || (ntensors && !tensors)) return yk_errorf(d, YK_EINVAL, "arena '%s': bad tensor table", name);
  for (int i = 0; i < s->narenas; i++)
    if (!strcmp(s->arenas[i].name, name)) return yk_errorf(d, YK_EEXIST, "arena '%s' registered twice", name);
  uint64_t end = 0;
  for (int i = 0; i < ntensors; i++) {
    const yk_tensor_desc *t = &tensors[i];
    if (!valid_name(t->name, 47)) return yk_errorf(d, YK_EINVAL, "arena '%s': tensor %d has a bad name", name, i);
    if (t->offset < end || t->offset + t->numel > numel || t->offset + t->numel < t->offset)
      return yk_errorf(d, YK_EINVAL,
                       "arena '%s': tensor '%s' [%zu, +%zu) overlaps the previous one or leaves the arena of %llu "
                       "elements; sort the table by offset",
                       name, t->name, t->offset, t->numel, (unsigned long long)numel);
    if (t->ndim < 0 || t->ndim > YK_TENSOR_MAX_DIMS)
      return yk_errorf(d, YK_EINVAL, "arena '%s': tensor '%s' has ndim %d", name, t->name, t->ndim);
    end = t->offset + t->numel;
  }
  ck_arena *na = realloc(s->arenas, (size_t)(s->narenas + 1) * sizeof *na);
  if (!na) return yk_errorf(d, YK_ENOMEM, "out of memory registering arena '%s'", name);
  s->arenas = na;
  ck_arena *a = &na[s->narenas];
  memset(a, 0, sizeof *a);
  snprintf(a->name, sizeof a->name, "%s", name);
  a->dtype = dtype;
  a->data = data;
  a->fill = fill;
  a->fill_ctx = fill_ctx;
  a->numel = numel;
  a->held_lo = lo;
  a->held_len = len;
  a->grank = gsize ? grank : 0;
  a->gsize = gsize;
  if (ntensors) {
    a->tensors = malloc((size_t)ntensors * sizeof *a->tensors);
    if (!a->tensors) return yk_errorf(d, YK_ENOMEM, "out of memory registering arena '%s'", name);
    memcpy(a->tensors, tensors, (size_t)ntensors * sizeof *tensors);
  }
  a->ntensors = ntensors;
  s->narenas++;
  return 0;
}

int yk_ckpt_state_add_arena_group(yk_ckpt_state *s, const char *name, yk_dtype dtype, void *data, uint64_t numel,
                                  uint64_t lo, uint64_t len, int grank, int gsize, const yk_tensor_desc *tensors,
                                  int ntensors, yk_diag *d) {
  return add_arena(s, name, dtype, data, NULL, NULL, numel, lo, len, grank, gsize, tensors, ntensors, d);
}

int yk_ckpt_state_add_arena_fill(yk_ckpt_state *s, const char *name, yk_dtype dtype, yk_ckpt_fill_fn fill, void *ctx,
                                 uint64_t numel, uint64_t lo, uint64_t len, int grank, int gsize,
                                 const yk_tensor_desc *tensors, int ntensors, yk_diag *d) {
  if (!fill) return yk_errorf(d, YK_EINVAL, "arena '%s': the fill function is NULL; pass one", name ? name : "(null)");
  return add_arena(s, name, dtype, NULL, fill, ctx, numel, lo, len, grank, gsize, tensors, ntensors, d);
}

int yk_ckpt_state_add_arena_part(yk_ckpt_state *s, const char *name, yk_dtype dtype, void *data, uint64_t numel,
                                 uint64_t lo, uint64_t len, const yk_tensor_desc *tensors, int ntensors, yk_diag *d) {
  return yk_ckpt_state_add_arena_group(s, name, dtype, data, numel, lo, len, 0, 0, tensors, ntensors, d);
}

int yk_ckpt_state_add_arena(yk_ckpt_state *s, const char *name, yk_dtype dtype, void *data, uint64_t numel,
                            const yk_tensor_desc *tensors, int ntensors, yk_diag *d) {
  return yk_ckpt_state_add_arena_part(s, name, dtype, data, numel, 0, numel, tensors, ntensors, d);
}

void yk_ckpt_arena_name(char *buf, size_t cap, const char *base, int tp, int tp_rank) {
  yk_ckpt_arena_name_stage(buf, cap, base, tp, tp_rank, 1, 0);
}

void yk_ckpt_arena_name_stage(char *buf, size_t cap, const char *base, int tp, int tp_rank, int pp, int pp_rank) {
  char t[24] = "", s[24] = "";
  if (tp > 1) snprintf(t, sizeof t, ".tp%dof%d", tp_rank, tp);
  if (pp > 1) snprintf(s, sizeof s, ".pp%dof%d", pp_rank, pp);
  snprintf(buf, cap, "%s%s%s", base, t, s);
}

int yk_ckpt_state_set_layout(yk_ckpt_state *s, const yk_layout *l, int sequence, yk_diag *d) {
  if (l->dp < 1 || l->tp < 1 || l->pp < 1)
    return yk_errorf(d, YK_EINVAL, "layout dp %d x tp %d x pp %d is not valid", l->dp, l->tp, l->pp);
  json_t *j = ck_layout_json(l, sequence);
  char *txt = j ? json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
  json_decref(j);
  if (!txt) return yk_errorf(d, YK_ENOMEM, "out of memory");
  free(s->layout_json);
  s->layout_json = txt;
  return 0;
}

int ck_arena_range(const ck_arena *a, uint64_t lo, uint64_t len, const uint8_t **out, yk_diag *d) {
  if (lo < a->held_lo || lo + len > a->held_lo + a->held_len)
    return yk_errorf(d, YK_EINVAL, "arena '%s': this rank saves elements [%llu, %llu) but holds only [%llu, %llu)",
                     a->name, (unsigned long long)lo, (unsigned long long)(lo + len), (unsigned long long)a->held_lo,
                     (unsigned long long)(a->held_lo + a->held_len));
  *out = a->data ? (const uint8_t *)a->data + (lo - a->held_lo) * yk_dtype_size(a->dtype) : NULL;
  return 0;
}

void ck_arena_save_range(const ck_arena *a, int rank, int world, uint64_t *lo, uint64_t *len) {
  if (a->gsize) yk_partition_even_range(a->numel, a->gsize, a->grank, lo, len);
  else yk_partition_even_range(a->numel, world, rank, lo, len);
}

int yk_ckpt_state_set_blob(yk_ckpt_state *s, const char *name, const void *data, size_t len, int per_rank,
                           yk_diag *d) {
  if (!valid_name(name, 63))
    return yk_errorf(d, YK_EINVAL, "blob name '%s' is empty, longer than 63 characters or has '\"', '\\', '/'",
                     name ? name : "(null)");
  if (!data && len) return yk_errorf(d, YK_EINVAL, "blob '%s': data is NULL", name);
  uint8_t *copy = malloc(len ? len : 1);
  if (!copy) return yk_errorf(d, YK_ENOMEM, "out of memory copying blob '%s' (%zu bytes)", name, len);
  if (len) memcpy(copy, data, len);
  per_rank = per_rank ? 1 : 0;
  for (int i = 0; i < s->nblobs; i++)
    if (!strcmp(s->blobs[i].name, name)) {
      if (s->blobs[i].per_rank != per_rank) {
        free(copy);
        return yk_errorf(d, YK_EINVAL, "blob '%s' was registered %s, now %s", name,
                         s->blobs[i].per_rank ? "per-rank" : "global", per_rank ? "per-rank" : "global");
      }
      free(s->blobs[i].data);
      s->blobs[i].data = copy;
      s->blobs[i].len = len;
      return 0;
    }
  ck_blob *nb = realloc(s->blobs, (size_t)(s->nblobs + 1) * sizeof *nb);
  if (!nb) {
    free(copy);
    return yk_errorf(d, YK_ENOMEM, "out of memory registering blob '%s'", name);
  }
  s->blobs = nb;
  ck_blob *b = &nb[s->nblobs++];
  memset(b, 0, sizeof *b);
  snprintf(b->name, sizeof b->name, "%s", name);
  b->per_rank = per_rank;
  b->data = copy;
  b->len = len;
  return 0;
}

int yk_ckpt_state_set_model_json(yk_ckpt_state *s, const char *json, yk_diag *d) {
  json_error_t je;
  json_t *j = json_loads(json ? json : "", 0, &je);
  if (!j || !json_is_object(j)) {
    json_decref(j);
    return yk_errorf(d, YK_EINVAL, "model section must be a JSON object: %s (line %d)",
                     j ? "not an object" : je.text, je.line);
  }
  char *compact = json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER);
  json_decref(j);
  if (!compact) return yk_errorf(d, YK_ENOMEM, "out of memory");
  free(s->model_json);
  s->model_json = compact;
  return 0;
}

int yk_ckpt_state_set_config_yaml(yk_ckpt_state *s, const char *yaml, yk_diag *d) {
  char *c = strdup(yaml ? yaml : "");
  if (!c) return yk_errorf(d, YK_ENOMEM, "out of memory");
  free(s->config_yaml);
  s->config_yaml = c;
  return 0;
}

int ck_state_blob_refs(const yk_ckpt_state *s, int rank, ck_blob_ref **out, int *n) {
  *out = NULL;
  *n = 0;
  if (!s->nblobs) return 0;
  ck_blob_ref *r = calloc((size_t)s->nblobs, sizeof *r);
  if (!r) return YK_ENOMEM;
  int k = 0;
  for (int i = 0; i < s->nblobs; i++) {
    const ck_blob *b = &s->blobs[i];
    if (!b->per_rank && rank != 0) continue;
    r[k].name = b->name;
    r[k].rank = b->per_rank ? rank : -1;
    r[k].data = b->data;
    r[k].len = b->len;
    k++;
  }
  *out = r;
  *n = k;
  return 0;
}
