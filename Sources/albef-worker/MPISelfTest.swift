import ArgumentParser
import Distributed

/// Exercises the MPI collectives under a real launcher (`mpirun -n 2 albef-worker mpi-selftest`).
struct MPISelfTest: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "mpi-selftest",
        abstract: "Check MPI allreduce / allgather / broadcast across the launched ranks.")

    func run() throws {
        let env = try MPIEnvironment()
        let comm = MPICommunicator(env)
        let failures = collectiveSelfTest(comm)
        if failures.isEmpty {
            print("mpi-selftest: rank \(comm.rank)/\(comm.size) ok")
        } else {
            for f in failures { print("mpi-selftest: \(f)") }
            throw ExitCode(1)
        }
    }
}
