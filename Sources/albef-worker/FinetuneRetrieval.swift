import ALBEF
import ArgumentParser
import Foundation
import Training

/// `albef-worker finetune-retrieval`: `Retrieval.py`'s training (`model_retrieval.py`: ITC whose
/// positives are every pair of the same image id, over the batch and the `idx_queue`; momentum
/// distillation; ITM on hard negatives that never pick a pair of the same image) on a
/// `re_train_dataset` JSON (`[{"image", "caption", "image_id"}]`, images under `image_root`).
///
/// The run is `train`'s (`ModelTrainingRun<ALBEFRetrieval>`): one process per rank under
/// `mpirun`, static sharding or coordinator leases of the JSON corpus, checkpoints and exact
/// `--resume`, stop signals, `metrics.jsonl` and TensorBoard. What differs is the config as
/// `Retrieval.py` reads `Retrieval.yaml` (``TrainConfig/adoptRetrievalTask()``): the per-rank
/// batch `batch_size_train`, captions to 30 tokens, crop scale (0.5, 1), `warm_up` (α ramp over
/// epoch 0), `distill`, the `schedular`; image ids numbered by first appearance
/// (``LoaderSource/imageIDTable(index:)``). Starting weights: `--checkpoint` (or the config's
/// `checkpoint`), read as `Retrieval.py` reads a pretraining checkpoint. With `eval_every`, the
/// recalls on `val_file`/`test_file` are evaluated at epoch ends.
struct FinetuneRetrieval: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "finetune-retrieval",
        abstract: "Retrieval fine-tuning as Retrieval.py (ITC with image-id positives, ITM) on a re_train_dataset JSON; one process per rank under mpirun, as train.")
    @OptionGroup var options: TrainRunOptions
    @Option(help: "Starting weights: a pretraining (or retrieval) checkpoint, read as Retrieval.py reads it (default: the config's checkpoint).")
    var checkpoint: String?

    func run() throws {
        try options.train(ALBEFRetrieval.self) { cfg in
            cfg.adoptRetrievalTask()
            if let checkpoint { cfg.checkpoint = checkpoint }
        }
    }
}
