/* mixed.c - the mixed-precision state of a run (see yk_mixed in
 * yk_optimizer.h): allocation, the initial rounding, unscaling and
 * publishing the rounded weights to the model. */
#include <string.h>

#include "yk_optimizer.h"

/* n 16-bit values in shared memory when `shared`, else private memory. */
static int alloc16(size_t n, int shared, const char *what, uint16_t **p, yk_shmem *shm, yk_diag *d) {
  if (shared) {
    int rc = yk_shmem_alloc(n * sizeof(uint16_t), what, shm, d);
    if (rc) return rc;
    *p = shm->ptr;
    return 0;
  }
  *p = yk_alloc(n * sizeof(uint16_t));
  return *p ? 0 : yk_errorf(d, YK_ENOMEM, "out of memory for %s (%zu parameters)", what, n);
}

/* What both set-ups share: the precision, the slice, and the master as the
 * fp32 arena's slice (borrowed) until a separate one is made. */
static void mixed_base(yk_mixed *mp, const yk_config *c, float *model_params, size_t n, size_t off, size_t len) {
  memset(mp, 0, sizeof *mp);
  mp->prec = yk_config_precision(c);
  mp->dt16 = mp->prec == YK_PREC_FP16 ? YK_DT_F16 : mp->prec == YK_PREC_BF16 ? YK_DT_BF16 : YK_DT_F32;
  mp->n = n;
  mp->off = off;
  mp->len = len;
  mp->master = model_params + off;
  mp->master_borrowed = 1;
}

int yk_optimizer_mixed_init(yk_mixed *mp, const yk_config *c, float *model_params, size_t n, size_t off, size_t len,
                            int share_params16, int share_grads16, yk_diag *d) {
  mixed_base(mp, c, model_params, n, off, len);
  if (mp->prec == YK_PREC_FP32) return 0;
  int rc;
  mp->master_borrowed = 0;
  mp->master = yk_alloc((len ? len : 1) * sizeof(float));
  if (!mp->master)
    return yk_errorf(d, YK_ENOMEM, "out of memory for %s master weights (%zu parameters)", c->train.precision, len);
  if ((rc = alloc16(n, share_params16, "yoke-params16", &mp->params16, &mp->params16_shm, d)) != 0 ||
      (rc = alloc16(n, share_grads16, "yoke-grads16", &mp->grads16, &mp->grads16_shm, d)) != 0)
    return rc;
  memcpy(mp->master, model_params + off, len * sizeof(float));
  yk_cast_from_f32(mp->params16, mp->dt16, model_params, n, YK_ISA_AUTO);
  yk_optimizer_mixed_publish(mp, model_params);
  if (mp->prec == YK_PREC_FP16) return yk_optimizer_loss_scaler_init(&mp->ls, c, d);
  return 0;
}

int yk_optimizer_mixed_init_in_arena(yk_mixed *mp, const yk_config *c, float *model_params, size_t n, size_t off,
                                     size_t len, yk_diag *d) {
  mixed_base(mp, c, model_params, n, off, len);
  return mp->prec == YK_PREC_FP16 ? yk_optimizer_loss_scaler_init(&mp->ls, c, d) : 0;
}

void yk_optimizer_mixed_free(yk_mixed *mp) {
  if (mp->prec == YK_PREC_FP32) return; /* master is the model's */
  if (!mp->master_borrowed) yk_free(mp->master);
  if (mp->params16_shm.ptr) yk_shmem_free(&mp->params16_shm);
  else yk_free(mp->params16);
  if (mp->grads16_shm.ptr) yk_shmem_free(&mp->grads16_shm);
  else yk_free(mp->grads16);
  memset(mp, 0, sizeof *mp);
}

float yk_optimizer_mixed_loss_scale(const yk_mixed *mp) {
  return mp->prec == YK_PREC_FP16 ? (float)mp->ls.st.scale : 1.0f;
}

void yk_optimizer_mixed_unscale(const yk_mixed *mp, float *grads, size_t off, size_t len, float loss_scale) {
  if (!mp->grads16) return;
  yk_cast_to_f32(grads + off, mp->grads16 + off, mp->dt16, len, 1.0f / loss_scale, YK_ISA_AUTO);
}

void yk_optimizer_mixed_publish(const yk_mixed *mp, float *model_params) {
  if (!mp->params16) return;
  yk_cast_to_f32(model_params, mp->params16, mp->dt16, mp->n, 1.0f, YK_ISA_AUTO);
}
