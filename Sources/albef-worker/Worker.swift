import ALBEF
import ALBEFSelfCheck
import ArgumentParser
import Foundation
import Tensor

@main
struct Worker: ParsableCommand {
    static func main() {
        setvbuf(stdout, nil, _IOLBF, 0)  // log lines appear as they are printed, also in files and pipes
        do {
            var command = try parseAsRoot()
            try command.run()
        } catch {
            exit(withError: error)
        }
    }

    static let configuration = CommandConfiguration(
        commandName: "albef-worker",
        abstract: "ALBEF pretraining rank (run under mpirun), fixture selfchecks and evaluation.",
        subcommands: [Train.self, Eval.self, FinetuneRetrieval.self, EvalRetrieval.self, SelfCheck.self, Convert.self, MPISelfTest.self, DistSelfTest.self, BenchStep.self, BenchKernels.self, BenchDist.self])
}

struct SelfCheck: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "selfcheck",
        abstract: "Reproduce a reference fixture directory and print per-quantity errors; exits 0 only on PASS.")

    @Argument(help: "Fixture directory (holds fixture.json).")
    var directory: String

    @Option(help: "Weights file for fixtures that need one (bert-encoder: the MiniLM model.safetensors).")
    var weights: String?

    @Option(help: "Threads for BLAS and kernels.")
    var threads: Int = 1

    func validate() throws {
        guard FileManager.default.fileExists(atPath: directory + "/fixture.json") else {
            throw ValidationError("\(directory)/fixture.json not found: pass a fixture directory such as ../shared/fixtures/albef-tiny-seed1")
        }
        guard threads >= 1 else { throw ValidationError("--threads must be ≥ 1") }
    }

    func run() throws {
        Threading.setThreads(threads)
        let report = SelfCheckReport()
        do {
            try runFixture(directory: URL(fileURLWithPath: directory), weights: weights, report: report)
        } catch {
            print("error: \(error)")
            print("selfcheck: FAIL \(error)")
            throw ExitCode(1)
        }
        print(report.verdict)
        if !report.passed { throw ExitCode(1) }
    }
}
