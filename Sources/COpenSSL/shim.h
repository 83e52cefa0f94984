#ifndef CELERITY_COPENSSL_SHIM_H
#define CELERITY_COPENSSL_SHIM_H
// OpenSSL 3 from Debian's libssl-dev, for rediss:// (Sources/RedisClient/TLSStream.swift).
// Swift does not import function-like macros: the few that TLSStream needs are wrapped here.
#include <openssl/ssl.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>

static inline long celerity_ssl_set_sni(SSL *ssl, const char *name) {
    return SSL_set_tlsext_host_name(ssl, name);
}
static inline long celerity_ssl_ctx_set_min_tls12(SSL_CTX *ctx) {
    return SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
}
static inline long celerity_ssl_ctx_set_mode(SSL_CTX *ctx, long mode) {
    return SSL_CTX_set_mode(ctx, mode);
}
static inline long celerity_ssl_mode_partial_writes(void) {
    return SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER;
}
#endif
