// swift-tools-version: 6.1
import PackageDescription

/// One settings array for every target: Swift 6 language mode (strict concurrency) is the
/// package default; warnings are kept at zero by review, not by flags.
let swiftSettings: [SwiftSetting] = [
    .enableUpcomingFeature("ExistentialAny"),
]

let package = Package(
    name: "Celerity",
    platforms: [.macOS(.v15)],
    products: [
        .library(name: "Celerity", targets: ["Celerity"]),
        .library(name: "CelerityBuiltins", targets: ["CelerityBuiltins"]),
        .library(name: "RedisClient", targets: ["RedisClient"]),
        .executable(name: "celerity", targets: ["CelerityCLI"]),
        .executable(name: "celerity-bench", targets: ["CelerityBench"]),
        .executable(name: "celerity-dashboard", targets: ["CelerityDashboard"]),
    ],
    dependencies: [
        .package(url: "https://github.com/jpsim/Yams.git", from: "6.2.2"),
        .package(url: "https://github.com/attaswift/BigInt.git", from: "6.0.1"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
        .package(url: "https://github.com/swiftlang/swift-subprocess.git", from: "1.0.2"),
        .package(url: "https://github.com/apple/swift-system.git", from: "1.5.0"),
        .package(url: "https://github.com/hummingbird-project/hummingbird.git", from: "2.28.1"),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.4.1"),
        .package(url: "https://github.com/apple/swift-http-types.git", from: "1.8.0"),
    ],
    targets: [
        // hiredis from Debian's libhiredis-dev. No pkgConfig: its include dir would leak
        // read.h/sds.h onto the global include path.
        .systemLibrary(name: "CHiredis", providers: [.apt(["libhiredis-dev"])]),
        // OpenBLAS's CBLAS interface from Debian's libopenblas-dev.
        .systemLibrary(name: "COpenBLAS", providers: [.apt(["libopenblas-dev"])]),
        // zlib and bzip2 from Debian's zlib1g-dev and libbz2-dev, for kombu's compressed
        // bodies. No Swift package of the mirror decompresses bzip2, so a system library is
        // needed anyway; compress-nio (zlib only) wraps this same libz and would bring
        // swift-nio into the library that clients link, for one call to inflate.
        .systemLibrary(name: "CCompression", providers: [.apt(["zlib1g-dev", "libbz2-dev"])]),
        // OpenSSL 3 from Debian's libssl-dev, for rediss:// (Sources/RedisClient/TLSStream.swift
        // says why TLS is done there and not by hiredis 0.14, which has none).
        .systemLibrary(name: "COpenSSL", providers: [.apt(["libssl-dev"])]),
        // Redis over hiredis (and OpenSSL for TLS). Knows Redis, nothing of tasks.
        .target(name: "RedisClient", dependencies: ["CHiredis", "COpenSSL",
                .product(name: "Logging", package: "swift-log")],
                swiftSettings: swiftSettings),
        // The library: JSON, Celery protocol, manifest, broker, worker, client, plugins.
        // Must not link BigInt or BLAS: a program that only sends calls links this alone.
        .target(name: "Celerity", dependencies: [
                "RedisClient", "CCompression",
                .product(name: "Yams", package: "Yams"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Subprocess", package: "swift-subprocess"),
                .product(name: "SystemPackage", package: "swift-system"),
            ], swiftSettings: swiftSettings),
        // The built-in Swift handlers and their heavy dependencies.
        .target(name: "CelerityBuiltins", dependencies: [
                "Celerity", "COpenBLAS",
                .product(name: "BigInt", package: "BigInt"),
            ], swiftSettings: swiftSettings),
        // The command line: parses, validates, calls the library. No business logic.
        .executableTarget(name: "CelerityCLI", dependencies: [
                "Celerity", "CelerityBuiltins",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Subprocess", package: "swift-subprocess"),
                .product(name: "SystemPackage", package: "swift-system"),
            ], swiftSettings: swiftSettings),
        // `celerity dashboard` (which runs this binary, found beside it): the web UI, JSON API
        // and Prometheus metrics. Its own executable, so that the worker's binary does not
        // link Hummingbird and SwiftNIO.
        .executableTarget(name: "CelerityDashboard", dependencies: [
                "Celerity", "RedisClient",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ], swiftSettings: swiftSettings),
        // Compute benchmarks of the built-ins against the tutorial's Python (release builds).
        .executableTarget(name: "CelerityBench", dependencies: ["Celerity", "CelerityBuiltins",
                .product(name: "BigInt", package: "BigInt")], swiftSettings: swiftSettings),
        .testTarget(name: "CelerityTests", dependencies: [
                "Celerity", "CelerityBuiltins", "RedisClient", "CelerityCLI",
                .product(name: "BigInt", package: "BigInt"),
            ], swiftSettings: swiftSettings),
    ]
)
