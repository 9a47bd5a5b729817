extension TrainConfig {
    /// Sets the number of epochs and the schedule's horizon with it (ALBEF's `schedular.epochs`
    /// is both the loop's length and the cosine's period).
    public mutating func overrideEpochs(_ n: Int) {
        epochs = n
        if case let .albef(base, warm, minLR, warmupEpochs, stepSize, _) = schedule {
            schedule = .albef(baseLR: base, warmupLR: warm, minLR: minLR, warmupEpochs: warmupEpochs, stepSize: stepSize, epochs: n)
        }
    }
}
