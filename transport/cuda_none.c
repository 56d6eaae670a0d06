/* SPDX-License-Identifier: MIT */
/* Built without the CUDA toolkit: device memory is refused. */
#include "engine/engine.h"

int kvr_devmem_attach(kvr_engine *e)
{
	kvr_set_errmsg(e, "kvring was built without CUDA (meson -Dcuda=enabled with the CUDA "
			  "toolkit at /usr/local/cuda or CUDA_HOME)");
	return -EOPNOTSUPP;
}
