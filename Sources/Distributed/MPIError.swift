import CMPI

/// A failed MPI call: the code and MPI's own text for it (`MPI_Error_string`).
public struct MPIError: Error, CustomStringConvertible {
    public let code: Int32
    public let function: String
    public let message: String
    public var description: String { "\(function) failed: MPI error \(code): \(message)" }
}

/// The one place MPI return codes become thrown errors.
@inline(__always)
func mpiCheck(_ rc: Int32, _ function: String = #function) throws {
    guard rc != CMPI_SUCCESS() else { return }
    var buf = [CChar](repeating: 0, count: 512)
    _ = CMPI_error_string(rc, &buf, Int32(buf.count))
    throw MPIError(code: rc, function: function, message: String(cString: buf))
}

/// Like `mpiCheck` for calls that cannot fail without the job being lost: prints and aborts the
/// whole MPI job (a rank that silently continues would deadlock its peers).
@inline(__always)
func mpiMust(_ rc: Int32, _ function: String = #function) {
    do { try mpiCheck(rc, function) } catch {
        print("fatal: \(error)")
        MPI_Abort(CMPI_COMM_WORLD(), rc)
    }
}
