#ifndef CELERITY_COPENBLAS_SHIM_H
#define CELERITY_COPENBLAS_SHIM_H
#include <cblas.h>
#endif
