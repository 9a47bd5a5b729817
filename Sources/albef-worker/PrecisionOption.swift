import ArgumentParser
import Tensor

extension Precision: ExpressibleByArgument {}

/// Selects the GEMM precision for this process (`--precision`, else the config's `precision:`)
/// and says what runs: the backend the CPU offers for bf16, or the warning when bf16 falls back
/// to fp32 on a CPU without bf16 instructions. Returns the precision in effect.
@discardableResult
func applyPrecision(_ p: Precision, echo: Bool) -> Precision {
    let warning = MatmulPrecision.set(p)
    if echo {
        if let warning { print(warning) }
        if MatmulPrecision.current == .bf16 {
            print("precision: bf16 GEMMs (fp32 accumulation; master weights, optimizer, norms, softmax, losses fp32) on \(MatmulPrecision.cpu)")
        }
    }
    return MatmulPrecision.current
}
