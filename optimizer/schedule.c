/* schedule.c - learning-rate schedules, AdamW settings from the config, and
 * the dynamic loss scaler's state machine (documented in yk_optimizer.h). */
#include "yk_optimizer.h"

#include <float.h>
#include <math.h>
#include <string.h>

void yk_optimizer_adamw_from_config(yk_adamw *h, const yk_config *c) {
  h->beta1 = c->optim.beta1;
  h->beta2 = c->optim.beta2;
  h->eps = c->optim.eps;
  h->weight_decay = c->optim.weight_decay;
  h->isa = YK_ISA_AUTO;
}

/* ---- learning rate ------------------------------------------------------ */

int yk_optimizer_lr_from_config(yk_lr_schedule *s, const yk_config *c, yk_diag *d) {
  memset(s, 0, sizeof *s);
  if (!strcmp(c->optim.schedule, "constant")) s->kind = YK_LR_CONSTANT;
  else if (!strcmp(c->optim.schedule, "cosine")) s->kind = YK_LR_COSINE;
  else
    return yk_errorf(d, YK_ECONFIG, "optim.schedule is '%s'; use constant or cosine", c->optim.schedule);
  if (c->optim.min_lr > c->optim.lr)
    return yk_errorf(d, YK_ECONFIG, "optim.min_lr=%g is above optim.lr=%g; lower optim.min_lr", c->optim.min_lr,
                     c->optim.lr);
  if (c->optim.warmup_steps < 0 || c->train.steps < 0)
    return yk_errorf(d, YK_ECONFIG, "optim.warmup_steps=%lld and train.steps=%lld must be >= 0",
                     (long long)c->optim.warmup_steps, (long long)c->train.steps);
  s->lr = c->optim.lr;
  s->min_lr = c->optim.min_lr;
  s->warmup_steps = c->optim.warmup_steps;
  s->total_steps = c->train.steps;
  return 0;
}

double yk_optimizer_lr_at(const yk_lr_schedule *s, int64_t step) {
  if (step < 0) step = 0;
  if (step < s->warmup_steps) return s->lr * (double)(step + 1) / (double)s->warmup_steps;
  if (s->kind == YK_LR_CONSTANT) return s->lr;
  if (step >= s->total_steps) return s->min_lr;
  /* here warmup_steps <= step < total_steps, so the span is >= 1 */
  double ratio = (double)(step - s->warmup_steps) / (double)(s->total_steps - s->warmup_steps);
  double coeff = 0.5 * (1.0 + cos(M_PI * ratio));
  return s->min_lr + coeff * (s->lr - s->min_lr);
}

/* ---- loss scaler -------------------------------------------------------- */

int yk_optimizer_loss_scaler_init_cfg(yk_loss_scaler *ls, const yk_loss_scaler_cfg *cfg, yk_diag *d) {
  if (!(cfg->init > 0) || !isfinite(cfg->init))
    return yk_errorf(d, YK_ECONFIG, "loss_scale.init=%g must be a positive finite number", cfg->init);
  if (!(cfg->min > 0) || cfg->min > cfg->init)
    return yk_errorf(d, YK_ECONFIG, "loss_scale.min=%g must be > 0 and <= loss_scale.init=%g", cfg->min, cfg->init);
  if (!(cfg->backoff > 0) || cfg->backoff > 1)
    return yk_errorf(d, YK_ECONFIG, "loss_scale.backoff=%g must be in (0, 1]", cfg->backoff);
  if (!(cfg->growth_factor >= 1))
    return yk_errorf(d, YK_ECONFIG, "loss_scale.growth_factor=%g must be >= 1", cfg->growth_factor);
  if (cfg->growth_interval < 1)
    return yk_errorf(d, YK_ECONFIG, "loss_scale.growth_interval=%lld must be >= 1", (long long)cfg->growth_interval);
  if (cfg->hysteresis < 1)
    return yk_errorf(d, YK_ECONFIG, "loss_scale.hysteresis=%lld must be >= 1", (long long)cfg->hysteresis);
  memset(ls, 0, sizeof *ls);
  ls->cfg = *cfg;
  ls->st.scale = cfg->init;
  ls->st.hysteresis_left = cfg->hysteresis;
  return 0;
}

int yk_optimizer_loss_scaler_init(yk_loss_scaler *ls, const yk_config *c, yk_diag *d) {
  yk_loss_scaler_cfg cfg = {
      .init = c->loss_scale.init,
      .min = c->loss_scale.min,
      .growth_factor = c->loss_scale.growth_factor,
      .backoff = c->loss_scale.backoff,
      .growth_interval = c->loss_scale.growth_interval,
      .hysteresis = c->loss_scale.hysteresis,
  };
  if (!strcmp(c->loss_scale.on_min, "stop")) cfg.stop_on_min = 1;
  else if (!strcmp(c->loss_scale.on_min, "continue")) cfg.stop_on_min = 0;
  else
    return yk_errorf(d, YK_ECONFIG, "loss_scale.on_min is '%s'; use stop or continue", c->loss_scale.on_min);
  return yk_optimizer_loss_scaler_init_cfg(ls, &cfg, d);
}

int yk_optimizer_loss_scaler_update(yk_loss_scaler *ls, int found_overflow) {
  yk_loss_scaler_state *st = &ls->st;
  const yk_loss_scaler_cfg *cfg = &ls->cfg;
  if (!found_overflow) {
    st->hysteresis_left = cfg->hysteresis;
    if (++st->clean_steps >= cfg->growth_interval) {
      st->clean_steps = 0;
      double grown = st->scale * cfg->growth_factor;
      if (grown <= FLT_MAX && grown != st->scale) {
        st->scale = grown;
        st->growths++;
      }
    }
    return YK_LS_APPLY;
  }
  st->overflows++;
  st->clean_steps = 0;
  if (st->hysteresis_left > 1) {
    st->hysteresis_left--;
    return YK_LS_SKIP;
  }
  st->hysteresis_left = 1;
  if (st->scale > cfg->min) {
    double s = st->scale * cfg->backoff;
    st->scale = s > cfg->min ? s : cfg->min;
    st->backoffs++;
    return YK_LS_SKIP;
  }
  return YK_EOVERFLOW;
}
