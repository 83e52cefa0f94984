#ifndef CELERITY_COPENBLAS_SHIM_H
#define CELERITY_COPENBLAS_SHIM_H
#include <x86_64-linux-gnu/cblas.h>
#endif
