import CCompression

/// The compressed bodies kombu sends (`apply_async(compression=…)`): the `compression` header
/// names the codec by content type. kombu's `gzip` and `zlib` both write zlib's format under
/// `application/x-gzip`; `bzip2` writes a bzip2 stream under `application/x-bz2`.
enum BodyCompression {
    /// The largest body decompressed, in bytes: a message is at most a Redis string (512 MiB),
    /// and a few bytes of zlib or bzip2 can claim gigabytes.
    static let maxBytes = 256 << 20

    enum Codec { case zlib, bzip2 }

    /// The codec of a `compression` header (kombu writes the content type; its aliases are
    /// accepted too), or nil when Celerity does not decompress it.
    static func codec(_ header: String) -> Codec? {
        switch header.lowercased() {
        case "application/x-gzip", "gzip", "zlib", "application/x-zlib": return .zlib
        case "application/x-bz2", "bzip2", "bzip", "application/x-bzip2": return .bzip2
        default: return nil
        }
    }

    /// The body, decompressed; the error says why not (an unknown codec, corrupt data, or a
    /// body past `maxBytes`).
    static func decompress(_ body: [UInt8], header: String, limit: Int = maxBytes) -> Result<[UInt8], DecompressionError> {
        switch codec(header) {
        case .zlib: return inflate(body, limit: limit)
        case .bzip2: return bunzip(body, limit: limit)
        case nil: return .failure(DecompressionError("bodies compressed as '\(header)' are not supported (gzip, zlib and bzip2 are)"))
        }
    }

    struct DecompressionError: Error {
        var message: String
        init(_ message: String) { self.message = message }
    }

    /// zlib's inflate over the whole body; the header (zlib or gzip) is detected.
    static func inflate(_ input: [UInt8], limit: Int) -> Result<[UInt8], DecompressionError> {
        var stream = z_stream()
        guard celerity_inflateInit2(&stream, 15 + 32) == Z_OK else { return .failure(DecompressionError("zlib could not start")) }
        defer { inflateEnd(&stream) }
        var out = [UInt8](repeating: 0, count: min(max(input.count * 4, 4096), limit))
        var produced = 0
        var status = Z_OK
        var overflow = false
        input.withUnsafeBufferPointer { inp in
            stream.next_in = UnsafeMutablePointer(mutating: inp.baseAddress)
            stream.avail_in = uInt(inp.count)
            while true {
                if produced == out.count {
                    guard out.count < limit else { overflow = true; return }
                    out.append(contentsOf: repeatElement(0, count: min(out.count, limit - out.count)))
                }
                out.withUnsafeMutableBufferPointer { o in
                    stream.next_out = o.baseAddress! + produced
                    stream.avail_out = uInt(o.count - produced)
                    status = CCompression.inflate(&stream, Z_NO_FLUSH)
                    produced = o.count - Int(stream.avail_out)
                }
                // Z_BUF_ERROR with the output full: room is all it needs.
                guard status == Z_OK || (status == Z_BUF_ERROR && produced == out.count) else { return }
            }
        }
        if overflow { return .failure(DecompressionError("the body decompresses to more than \(limit) bytes")) }
        guard status == Z_STREAM_END else {
            let why = status == Z_BUF_ERROR ? "the data ends too soon" : stream.msg.map { String(cString: $0) } ?? "zlib error \(status)"
            return .failure(DecompressionError("zlib: \(why)"))
        }
        out.removeSubrange(produced...)
        return .success(out)
    }

    /// bzip2's decompressor over the whole body.
    static func bunzip(_ input: [UInt8], limit: Int) -> Result<[UInt8], DecompressionError> {
        var stream = bz_stream()
        guard BZ2_bzDecompressInit(&stream, 0, 0) == BZ_OK else { return .failure(DecompressionError("bzip2 could not start")) }
        defer { BZ2_bzDecompressEnd(&stream) }
        var out = [UInt8](repeating: 0, count: min(max(input.count * 6, 4096), limit))
        var produced = 0
        var status = BZ_OK
        var overflow = false
        input.withUnsafeBufferPointer { inp in
            inp.withMemoryRebound(to: CChar.self) { chars in
                stream.next_in = UnsafeMutablePointer(mutating: chars.baseAddress)
                stream.avail_in = UInt32(chars.count)
                while true {
                    if produced == out.count {
                        guard out.count < limit else { overflow = true; return }
                        out.append(contentsOf: repeatElement(0, count: min(out.count, limit - out.count)))
                    }
                    out.withUnsafeMutableBufferPointer { o in
                        o.withMemoryRebound(to: CChar.self) { oc in
                            stream.next_out = oc.baseAddress! + produced
                            stream.avail_out = UInt32(oc.count - produced)
                            status = BZ2_bzDecompress(&stream)
                            produced = oc.count - Int(stream.avail_out)
                        }
                    }
                    // BZ_OK with nothing left to read and room to spare: the data ended early.
                    guard status == BZ_OK, stream.avail_in > 0 || produced == out.count else { return }
                }
            }
        }
        if overflow { return .failure(DecompressionError("the body decompresses to more than \(limit) bytes")) }
        guard status == BZ_STREAM_END else {
            return .failure(DecompressionError(status == BZ_OK ? "bzip2: the data ends too soon" : "bzip2: corrupt data (error \(status))"))
        }
        out.removeSubrange(produced...)
        return .success(out)
    }
}
