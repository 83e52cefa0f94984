import Foundation
import HTTPTypes
import Hummingbird


/// Who may use the dashboard. On a loopback address, anyone who can reach it (as Flower by
/// default); elsewhere only with the credentials named in the environment, and it refuses to
/// start without them. Every action is a POST carrying the CSRF token of the page (header
/// `X-CSRF-Token`): a page of another site cannot read the token nor set the header.
struct Access: Sendable {
    struct Unsafe: Error { let message: String }

    let token: String?
    let user: String?
    let password: String?
    /// The CSRF token of this dashboard process (random; pages carry it).
    let csrf: String

    init(host: String, environment env: [String: String]) throws {
        token = env["CELERITY_DASHBOARD_TOKEN"].flatMap { $0.isEmpty ? nil : $0 }
        user = env["CELERITY_DASHBOARD_USER"].flatMap { $0.isEmpty ? nil : $0 }
        password = env["CELERITY_DASHBOARD_PASSWORD"].flatMap { $0.isEmpty ? nil : $0 }
        if (user == nil) != (password == nil) {
            throw Unsafe(message: "set both CELERITY_DASHBOARD_USER and CELERITY_DASHBOARD_PASSWORD, or neither")
        }
        if !Self.isLoopback(host) && token == nil && user == nil {
            throw Unsafe(message: "--host \(host) is not a loopback address: set CELERITY_DASHBOARD_TOKEN, or CELERITY_DASHBOARD_USER and CELERITY_DASHBOARD_PASSWORD, so that not everyone who reaches it can use it")
        }
        var bytes = [UInt8](repeating: 0, count: 24)
        for i in bytes.indices { bytes[i] = UInt8.random(in: 0...255) }
        csrf = bytes.map { String(format: "%02x", $0) }.joined()
    }

    static func isLoopback(_ host: String) -> Bool {
        host == "localhost" || host == "::1" || host.hasPrefix("127.")
    }

    var required: Bool { token != nil || user != nil }

    /// Whether a request's `Authorization` header is accepted.
    func allows(_ authorization: String?) -> Bool {
        guard required else { return true }
        guard let authorization else { return false }
        if let token, authorization == "Bearer " + token { return true }
        if authorization.hasPrefix("Basic "),
           let data = Data(base64Encoded: String(authorization.dropFirst(6))), let pair = String(data: data, encoding: .utf8),
           let colon = pair.firstIndex(of: ":") {
            let u = String(pair[..<colon]), p = String(pair[pair.index(after: colon)...])
            if let user, let password, Self.same(u, user) && Self.same(p, password) { return true }
            if let token, user == nil, Self.same(p, token) { return true }
        }
        return false
    }

    /// Compares without stopping at the first difference.
    static func same(_ a: String, _ b: String) -> Bool {
        let x = Array(a.utf8), y = Array(b.utf8)
        var diff = x.count ^ y.count
        for i in 0..<min(x.count, y.count) { diff |= Int(x[i] ^ y[i]) }
        return diff == 0
    }
}

/// Refuses requests without the credentials (401 with a basic-auth challenge), and POSTs
/// without the CSRF token (403).
struct AccessMiddleware<Context: RequestContext>: RouterMiddleware {
    let access: Access
    static var csrfHeader: HTTPField.Name { HTTPField.Name("X-CSRF-Token")! }

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        if request.uri.path != "/healthz" && !access.allows(request.headers[.authorization]) {
            return Response(status: .unauthorized, headers: [.wwwAuthenticate: "Basic realm=\"celerity\"", .contentType: "text/plain"],
                            body: .init(byteBuffer: ByteBuffer(string: "credentials required\n")))
        }
        if request.method == .post && !Access.same(request.headers[Self.csrfHeader] ?? "", access.csrf) {
            return Response(status: .forbidden, headers: [.contentType: "application/json"],
                            body: .init(byteBuffer: ByteBuffer(string: #"{"error":"missing or wrong X-CSRF-Token (take it from GET /api/csrf or the page)"}"#)))
        }
        return try await next(request, context)
    }
}
