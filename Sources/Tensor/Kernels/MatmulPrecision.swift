import CKernels
#if canImport(Glibc)
import Glibc
#endif

/// The arithmetic of the GEMMs in linear layers and attention.
///
/// - `fp32`: `cblas_sgemm` on Float32 (the default; bit-identical to the code before bf16 existed).
/// - `bf16`: mixed precision as PyTorch's `torch.autocast("cpu", dtype=torch.bfloat16)` for the
///   GEMMs: the operands of every linear layer, attention matmul and their backward are rounded
///   to bf16, multiplied with fp32 accumulation (oneDNN), and the result is kept in fp32.
///   Master weights, gradients, AdamW moments, the momentum EMA, layer norm, softmax, GELU and
///   the losses stay fp32. Deviations from autocast: GEMM results are fp32, not rounded to bf16
///   (so nothing downstream sees bf16 activations); the ITC similarities against the feature
///   queues (`Tensor.similarity`) and the generic `matmul` (retrieval scoring) stay fp32.
public enum Precision: String, Sendable, CaseIterable {
    case fp32, bf16
}

/// What this CPU offers for bf16 GEMMs.
public struct BF16CPUReport: Sendable, CustomStringConvertible {
    /// CPUID AVX512_BF16 (vdpbf16ps), with the OS saving AVX-512 state.
    public var avx512BF16: Bool
    /// CPUID AMX-BF16 + AMX-TILE, with the OS enabling tile state.
    public var amxBF16: Bool
    /// oneDNN's effective ISA (`dnnl_cpu_isa_t`), or nil when not asked.
    public var onednnISA: Int?

    /// The backend a bf16 GEMM runs on, nil when this CPU has none.
    public var backend: String? {
        if amxBF16 { return "oneDNN \(OneDNN.version) matmul (AMX-BF16)" }
        if avx512BF16 { return "oneDNN \(OneDNN.version) matmul (AVX512_BF16)" }
        return nil
    }

    public var description: String {
        "avx512_bf16 \(avx512BF16 ? "yes" : "no"), amx_bf16 \(amxBF16 ? "yes" : "no")"
            + (onednnISA.map { ", oneDNN ISA 0x" + String($0, radix: 16) } ?? "")
            + " → " + (backend ?? "no bf16 GEMM backend")
    }
}

/// The process-wide precision setting that the GEMM entry points (linear, fused linear,
/// attention) consult. Set once at start-up (`train --precision`, `precision:` in the config).
public enum MatmulPrecision {
    nonisolated(unsafe) public private(set) static var current: Precision = .fp32
    /// Tests: pretend this CPU has no bf16 (exercises the fallback).
    nonisolated(unsafe) static var simulateNoBF16 = false

    /// Depth of `inFP32` scopes: GEMMs started inside one run in fp32 even when `current` is bf16.
    nonisolated(unsafe) static var fp32ScopeDepth = 0

    /// True when a GEMM started now runs in bf16 (`current` is bf16 and no `inFP32` scope is open).
    @inline(__always) static var isBF16: Bool { current == .bf16 && fp32ScopeDepth == 0 }

    /// Runs `body` with its GEMMs (forward, and the backward of the ops it records) in fp32 —
    /// the layers that bf16 mode keeps in fp32 on purpose (see `ALBEFEncoders`). A no-op in fp32.
    /// Call from the thread that builds the graph (not from inside parallel loops).
    public static func inFP32<T>(_ body: () throws -> T) rethrows -> T {
        fp32ScopeDepth += 1
        defer { fp32ScopeDepth -= 1 }
        return try body()
    }

    /// Ablations of the bf16 policy (environment `ALBEF_BF16_ABLATE`, comma-separated; for
    /// experiments only, read once): `backward-fp32` runs every GEMM's backward in fp32,
    /// `momentum-fp32` the momentum encoders' forward, `itc-fp32` the ITC projections,
    /// `attention-fp32` the attention matmuls, `backward-dinp-fp32` / `backward-dweight-fp32` one
    /// of a linear layer's two backward GEMMs (input gradient / weight gradient), `no-weight-cache` converts the trainable weights
    /// at every GEMM instead of once per step (memory analysis: the cache's share of the RSS),
    /// `no-weight-split` keeps a bf16 copy of the linear and embedding weights instead of splitting
    /// them in place (`BF16Weights`; the same bits, 2 bytes a parameter more),
    /// `keep-fp32-inputs` keeps the fp32 inputs attention (Q, K, V) and `addingLinear` save for
    /// the backward instead of converting them to bf16 in their own memory
    /// (`Tensor.convertingStorageToBF16`; the same bits).
    nonisolated(unsafe) public static var ablations: Set<String> = {
        guard let v = getenv("ALBEF_BF16_ABLATE") else { return [] }
        return Set(String(cString: v).split(separator: ",").map(String.init))
    }()

    /// What the CPU reports, and oneDNN's view of it.
    public static var cpu: BF16CPUReport {
        if simulateNoBF16 { return BF16CPUReport(avx512BF16: false, amxBF16: false, onednnISA: nil) }
        return BF16CPUReport(avx512BF16: ck_cpu_has_avx512_bf16() != 0, amxBF16: ck_cpu_has_amx_bf16() != 0,
                             onednnISA: OneDNN.effectiveISA)
    }

    /// Selects the GEMM precision. `bf16` on a CPU without avx512_bf16 or AMX (or when oneDNN
    /// cannot create its engine) falls back to fp32 and returns the warning to print; otherwise nil.
    @discardableResult
    public static func set(_ p: Precision) -> String? {
        guard p == .bf16 else { current = .fp32; return nil }
        let report = cpu
        guard report.backend != nil else {
            current = .fp32
            return "warning: precision bf16 requested, but this CPU reports \(report); falling back to fp32 (same results as precision: fp32)"
        }
        do { try OneDNN.initialize() } catch {
            current = .fp32
            return "warning: precision bf16 requested, but \(error); falling back to fp32"
        }
        current = .bf16
        BF16Weights.invalidate()
        return nil
    }

    /// Runs `body` with GEMMs in precision `p` (tests and benchmarks), restoring the previous one.
    /// Returns nil (and runs nothing) when `p` is unavailable here.
    public static func with<T>(_ p: Precision, _ body: () throws -> T) rethrows -> T? {
        let was = current
        if set(p) != nil { set(was); return nil }
        defer { set(was) }
        return try body()
    }
}

extension MatmulPrecision {
    /// `ablations` contains `name` (see there).
    @inline(__always) public static func ablated(_ name: String) -> Bool { !ablations.isEmpty && ablations.contains(name) }
}
