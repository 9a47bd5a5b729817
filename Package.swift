// swift-tools-version:6.0
// ALBEF pretraining on CPU clusters: Swift over OpenBLAS, Open MPI, ZeroMQ, protobuf-c.
import PackageDescription

/// Settings shared by every Swift target: none. Release builds use SwiftPM's plain `-O`, which
/// keeps preconditions, bounds and overflow checks, so shipped binaries stop with an error on a
/// wrong index instead of reading or writing out of bounds (no unchecked optimisation mode;
/// the measured cost is in the README, "Bad input is an error").
let swiftSettings: [SwiftSetting] = []

let package = Package(
    name: "albef-swift",
    platforms: [.macOS(.v13)],
    products: [
        .library(name: "Tensor", targets: ["Tensor"]),
        .library(name: "NN", targets: ["NN"]),
        .library(name: "ALBEF", targets: ["ALBEF"]),
        .library(name: "ALBEFSelfCheck", targets: ["ALBEFSelfCheck"]),
        .library(name: "Corpus", targets: ["Corpus"]),
        .library(name: "DataPipeline", targets: ["DataPipeline"]),
        .library(name: "Distributed", targets: ["Distributed"]),
        .library(name: "Control", targets: ["Control"]),
        .library(name: "Training", targets: ["Training"]),
        .executable(name: "albef-worker", targets: ["albef-worker"]),
        .executable(name: "albef-coord", targets: ["albef-coord"]),
        .executable(name: "albef-data", targets: ["albef-data"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/jpsim/Yams", from: "5.0.1"),
    ],
    targets: [
        // C libraries: one target each.
        .systemLibrary(name: "CBLAS", pkgConfig: "openblas", providers: [.apt(["libopenblas-dev"])]),
        .systemLibrary(name: "CMPISystem", path: "Sources/CMPISystem", pkgConfig: "ompi-c",
                       providers: [.apt(["libopenmpi-dev"])]),
        .target(name: "CMPI", dependencies: ["CMPISystem"]),
        .systemLibrary(name: "CZMQ", pkgConfig: "libzmq", providers: [.apt(["libzmq3-dev"])]),
        .target(name: "CControlProto", linkerSettings: [.linkedLibrary("protobuf-c")]),
        .target(name: "CImage", linkerSettings: [.linkedLibrary("jpeg"), .linkedLibrary("png16")]),
        // Bandwidth-bound kernels (GELU, layer norm, softmax), AVX-512 / AVX2+FMA with a portable fallback.
        .target(name: "CKernels", cSettings: [.unsafeFlags(["-O3", "-ffp-contract=on"])], linkerSettings: [.linkedLibrary("dl")]),
        // oneDNN's bf16 matmul (Debian libdnnl-dev 2.6, which ships no pkg-config file): a C shim
        // that opens libdnnl.so.2 on first use (so OMP_WAIT_POLICY can be set before libgomp
        // loads, and fp32 runs never load it), caches primitives and returns status codes.
        .target(name: "CDNNL", linkerSettings: [.linkedLibrary("dl")]),

        // Swift layers.
        .target(name: "Tensor", dependencies: ["CBLAS", "CKernels", "CDNNL"], swiftSettings: swiftSettings),
        .target(name: "NN", dependencies: ["Tensor"], swiftSettings: swiftSettings),
        .target(name: "ALBEF", dependencies: ["NN", "Tensor"], swiftSettings: swiftSettings),
        // Parity harnesses against PyTorch fixtures (`albef-worker selfcheck DIR`), beside the model.
        .target(name: "ALBEFSelfCheck", dependencies: ["ALBEF", "NN", "Tensor"], swiftSettings: swiftSettings),
        // The corpus index and the sample range: one definition for the data and control planes.
        .target(name: "Corpus", swiftSettings: swiftSettings),
        .target(name: "DataPipeline", dependencies: ["Corpus", "Tensor", "CImage"], swiftSettings: swiftSettings),
        .target(name: "Distributed", dependencies: ["CMPI", "Tensor"], swiftSettings: swiftSettings),
        .target(name: "Control", dependencies: ["Corpus", "CZMQ", "CControlProto"], swiftSettings: swiftSettings),
        .target(name: "Training", dependencies: ["ALBEF", "NN", "Tensor", "Distributed", "DataPipeline", "Control", "Yams"],
                swiftSettings: swiftSettings),

        // Executables (thin).
        .executableTarget(name: "albef-worker", dependencies: [
            "Training", "ALBEF", "ALBEFSelfCheck", "NN", "Tensor", "CKernels", "DataPipeline", "Distributed", "Control", "Yams",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ], swiftSettings: swiftSettings),
        .executableTarget(name: "albef-coord", dependencies: [
            "Control", .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ], swiftSettings: swiftSettings),
        .executableTarget(name: "albef-data", dependencies: [
            "DataPipeline", .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ], swiftSettings: swiftSettings),

        // Tests.
        .testTarget(name: "TensorTests", dependencies: ["Tensor", "CKernels"]),
        .testTarget(name: "NNTests", dependencies: ["NN", "Tensor"]),
        .testTarget(name: "ALBEFTests", dependencies: ["ALBEF", "ALBEFSelfCheck", "NN", "Tensor"], resources: [.copy("Fixtures")]),
        .testTarget(name: "DataPipelineTests", dependencies: ["DataPipeline", "Tensor", "CImage"],
                    resources: [.copy("Fixtures")]),
        .testTarget(name: "DistributedTests", dependencies: ["Distributed", "Tensor", "CMPI"]),
        .testTarget(name: "TrainingTests", dependencies: ["Training", "ALBEF", "NN", "Tensor", "Distributed", "DataPipeline", "Control"]),
        .testTarget(name: "ControlTests", dependencies: ["Control", "CZMQ", "CControlProto"]),
    ],
    swiftLanguageModes: [.v5]
)
