import ArgumentParser
import Control
import Foundation

/// `albef-coord`: the ALBEF job coordinator and its control commands.
@main
struct AlbefCoord: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "albef-coord",
        abstract: "Coordinator of an ALBEF pretraining job (leases, heartbeats, checkpoints, commands).",
        subcommands: [Serve.self, Status.self, Stop.self, Checkpoint.self, Keygen.self, Bench.self])
}
