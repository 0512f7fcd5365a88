#include "coll_internal.h"
int xport_ofi_create(yk_bootstrap *b, const char *provider, uint64_t timeout_ms, xport **out, yk_diag *d) {
  return yk_errorf(d, YK_EUNSUPPORTED, "libfabric transport not built yet");
}
