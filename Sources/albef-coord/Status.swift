import ArgumentParser
import Control
import Foundation

struct Status: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Show the job's state, progress and rank health.")

    @OptionGroup var connection: ConnectionOptions
    @Flag(help: "Print JSON instead of a table.")
    var json = false
    @Flag(help: "Refresh every second until interrupted.")
    var watch = false

    func run() throws {
        do {
            let requester = try connection.requester()
            repeat {
                let status = try requester.status()
                if watch { print("\u{1B}[2J\u{1B}[H", terminator: "") }
                print(json ? status.jsonText() : status.table())
                fflush(stdout)
                if watch { sleep(1) }
            } while watch
        } catch {
            throw fail(error)
        }
    }
}

struct Stop: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Stop the job (rank 0 broadcasts it at a step boundary).")
    @OptionGroup var connection: ConnectionOptions
    @Option(help: "Reason recorded with the command.")
    var reason = "albef-coord stop"

    func run() throws {
        do {
            let id = try connection.requester().command(.stop, reason: reason)
            print(id == 0 ? "albef-coord: job stopped" : "albef-coord: stop sent (command \(id))")
        } catch {
            throw fail(error)
        }
    }
}

struct Checkpoint: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Ask the job to write a checkpoint at the next step boundary.")
    @OptionGroup var connection: ConnectionOptions

    func run() throws {
        do {
            let id = try connection.requester().command(.checkpointNow, reason: "albef-coord checkpoint")
            print("albef-coord: checkpoint requested (command \(id))")
        } catch {
            throw fail(error)
        }
    }
}

struct Keygen: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Write CURVE keypairs: server.pub/server.key (coordinator) and client.pub/client.key (ranks, tools).")
    @Option(help: "Directory to write the keys into.")
    var out = "keys"

    func validate() throws {
        if !zmqHas("curve") { throw ValidationError("this libzmq has no CURVE support; use --token instead") }
    }

    func run() throws {
        do {
            let files = try CurveKeyFiles.generate(into: URL(fileURLWithPath: out))
            print("albef-coord: wrote \(out)/server.pub, server.key, client.pub, client.key (server public key \(files.server.publicKey))")
        } catch {
            throw fail(error)
        }
    }
}
