#ifndef CELERITY_CCOMPRESSION_SHIM_H
#define CELERITY_CCOMPRESSION_SHIM_H
#include <zlib.h>
#include <bzlib.h>

/* inflateInit2 is a macro (it passes zlib's version and the stream's size): Swift cannot call it. */
static inline int celerity_inflateInit2(z_streamp strm, int windowBits) {
    return inflateInit2(strm, windowBits);
}
#endif
