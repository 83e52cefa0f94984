#ifndef CELERITY_CHIREDIS_SHIM_H
#define CELERITY_CHIREDIS_SHIM_H
#include <hiredis/hiredis.h>
#endif
