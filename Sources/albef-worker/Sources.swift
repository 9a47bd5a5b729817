import ALBEF
import Foundation
import Training

/// Builds this rank's corpus reader (static sharding by rank).
func makeCorpusSource(config: TrainConfig, corpus: String?, rank: Int, worldSize: Int, seed: UInt64, threads: Int,
                      outputDir: String) throws -> BatchSource {
    throw TrainingError.data("corpus reading is not wired yet: pass --synthetic N")
}

/// Coordinator integration (leases, heartbeats, commands).
protocol RunControl: AnyObject {
    func shutdown()
    func finish(run: TrainingRun)
}

func attachCoordinator(_ endpoint: String?, run: TrainingRun, comm: Any, config: TrainConfig) throws -> RunControl? {
    guard endpoint == nil else { throw TrainingError.data("--coordinator is not wired yet") }
    return nil
}
