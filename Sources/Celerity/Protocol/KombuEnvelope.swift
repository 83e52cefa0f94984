import Foundation

/// kombu's envelope of a message on Redis (`{"body", "content-type", "headers", "properties"}`),
/// read by the remote-control side (requests, replies) and the event receiver alike.
enum KombuEnvelope {
    /// The envelope, and its body's bytes: base64-decoded when `properties.body_encoding` says
    /// so, the text itself otherwise. nil when `raw` is not JSON, has no string body, or its
    /// base64 does not decode.
    static func open(_ raw: [UInt8]) -> (envelope: JSONValue, body: [UInt8])? {
        guard let env = try? JSONValue(parsing: raw), let text = env["body"]?.stringValue else { return nil }
        guard env["properties"]?["body_encoding"]?.stringValue == "base64" else { return (env, Array(text.utf8)) }
        guard let d = Data(base64Encoded: text, options: .ignoreUnknownCharacters) else { return nil }
        return (env, Array(d))
    }
}
