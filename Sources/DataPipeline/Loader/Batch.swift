/// Where a loader stands, for sample-exact resume (saved in the checkpoint manifest).
///
/// Static sharding: `cursor` is the index, in this rank's sample sequence for `epoch`, of the next
/// sample to read; `batches` the batches already produced this epoch. Range mode: `pending` holds
/// the unread remainder of the range being consumed followed by the fetched-but-unread ranges, so
/// a resumed loader can be fed them before new leases.
///
/// `rangesCompleted` (range mode) counts the ranges handed out by the source, in order and empty
/// ones included, that are entirely consumed at this position: a lease client can report exactly
/// those as done. (Ranges fetched after this batch was assembled are neither pending nor
/// completed here: do not infer "done" from their absence in `pending`.)
public struct LoaderPosition: Codable, Equatable, Sendable {
    public var epoch: Int
    public var cursor: Int
    public var batches: Int
    public var pending: [SampleRange]
    public var rangesCompleted: Int
    /// Static sharding: the epoch's slot layout the cursor counts in (nil: one slot per rank
    /// from the epoch's start, as before slot layouts existed).
    public var plan: SlotPlan?

    public init(epoch: Int, cursor: Int = 0, batches: Int = 0, pending: [SampleRange] = [], rangesCompleted: Int = 0, plan: SlotPlan? = nil) {
        self.epoch = epoch
        self.cursor = cursor
        self.batches = batches
        self.pending = pending
        self.rangesCompleted = rangesCompleted
        self.plan = plan
    }

    enum CodingKeys: String, CodingKey { case epoch, cursor, batches, pending, rangesCompleted, plan }

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        epoch = try c.decode(Int.self, forKey: .epoch)
        cursor = try c.decode(Int.self, forKey: .cursor)
        batches = try c.decode(Int.self, forKey: .batches)
        pending = try c.decodeIfPresent([SampleRange].self, forKey: .pending) ?? []
        rangesCompleted = try c.decodeIfPresent(Int.self, forKey: .rangesCompleted) ?? 0
        plan = try c.decodeIfPresent(SlotPlan.self, forKey: .plan)
    }
}

/// One training batch.
public struct Batch: Sendable {
    /// (batchSize, 3, imageSize, imageSize), CLIP-normalized, row-major.
    public var images: [Float]
    /// (batchSize, textLength): `[CLS]` + ≤ maxLength−1 WordPiece ids, `[PAD]` (0) to the longest row.
    public var inputIds: [Int32]
    /// (batchSize, textLength): 1 on real tokens, 0 on padding.
    public var attentionMask: [Int32]
    public var batchSize: Int
    public var textLength: Int
    public var imageSize: Int
    /// WebDataset keys / JSON entry numbers.
    public var keys: [String]
    /// The captions after `pre_caption` (what was tokenized).
    public var captions: [String]
    /// The samples, in batch order.
    public var samples: [SampleRef]
    /// The loader position right after this batch (resume from here to continue with the next one).
    public var position: LoaderPosition
}
