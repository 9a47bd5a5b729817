import ALBEF
import DataPipeline
import Foundation
import Tensor

/// `BatchSource` over the data pipeline's `DataLoader`: static sharding by rank
/// (DistributedSampler-like, drop_last) or ranges leased from the coordinator.
public final class LoaderSource: BatchSource {
    public let index: CorpusIndex
    public let tokenizer: BertTokenizer
    public let configuration: DataLoader.Configuration
    public let rank: Int, worldSize: Int
    /// Leases instead of static sharding (coordinator): the range source of each epoch.
    public let ranges: ((Int) -> SampleRangeSource)?
    public private(set) var iterationsPerEpoch: Int
    var loader: DataLoader?
    /// Position after the last batch trained, and after the last one read.
    var lastPosition: LoaderPosition?
    var readPosition: LoaderPosition?
    var restored: LoaderPosition?
    var counts: [String: Int] = [:]

    public init(index: CorpusIndex, tokenizer: BertTokenizer, configuration: DataLoader.Configuration, rank: Int, worldSize: Int,
                ranges: ((Int) -> SampleRangeSource)? = nil, iterationsPerEpoch: Int? = nil) throws {
        self.index = index
        self.tokenizer = tokenizer
        self.configuration = configuration
        self.rank = rank
        self.worldSize = worldSize
        self.ranges = ranges
        if let n = iterationsPerEpoch {
            self.iterationsPerEpoch = n
        } else {
            let probe = try DataLoader(index: index, tokenizer: tokenizer, configuration: configuration, rank: rank, worldSize: worldSize, epoch: 0)
            self.iterationsPerEpoch = probe.batchesPerEpoch ?? 0
            probe.stop()
        }
    }

    /// Continue from a checkpointed position (this rank's `dataPosition`).
    public func restore(position: String?) throws {
        guard let position, let d = position.data(using: .utf8) else { return }
        restored = try JSONDecoder().decode(LoaderPosition.self, from: d)
    }

    public func start(epoch: Int, iteration: Int) throws {
        loader?.stop()
        lastPosition = nil
        readPosition = nil
        if let ranges {
            loader = try DataLoader(index: index, tokenizer: tokenizer, configuration: configuration, ranges: ranges(epoch), rank: rank,
                                    worldSize: worldSize, epoch: epoch)
        } else {
            let resume = restored.flatMap { $0.epoch == epoch ? $0 : nil }
            loader = try DataLoader(index: index, tokenizer: tokenizer, configuration: configuration, rank: rank, worldSize: worldSize,
                                    epoch: epoch, resumeFrom: resume)
            lastPosition = resume
            readPosition = resume
        }
        restored = nil
    }

    public func next() throws -> PretrainBatch? {
        guard let loader, let b = try loader.next() else { return nil }
        readPosition = b.position
        for (k, v) in loader.statistics.badByKind { counts["\(k)"] = v }
        let images = Tensor(b.images, shape: [b.batchSize, 3, b.imageSize, b.imageSize])
        return PretrainBatch(images: images, inputIds: b.inputIds, attentionMask: b.attentionMask, batchSize: b.batchSize, length: b.textLength)
    }

    public func markTrained() { lastPosition = readPosition }

    public var reshardsOnResume: Bool { ranges != nil }

    public func position() -> String? {
        guard let p = lastPosition, let d = try? JSONEncoder().encode(p) else { return nil }
        return String(decoding: d, as: UTF8.self)
    }

    public var badSampleCounts: [String: Int] { counts }

    /// The loader position after the last batch trained (range mode: `pending` = unread ranges).
    public var loaderPosition: LoaderPosition? { lastPosition }

    deinit { loader?.stop() }
}
