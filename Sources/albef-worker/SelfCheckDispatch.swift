import ALBEFSelfCheck
import DataPipeline
import Foundation

/// Runs the selfcheck matching the fixture's `kind`.
func runFixture(directory: URL, weights: String?, report: SelfCheckReport) throws {
    let json = try readFixtureJSON(directory)
    let kind = json["kind"] as? String ?? "?"
    report.note("fixture \(directory.lastPathComponent): kind \(kind)")
    switch kind {
    case "albef-pretrain-step":
        try PretrainStepSelfCheck.run(directory: directory, report: report)
    case "albef-retrieval-step":
        try RetrievalStepSelfCheck.run(directory: directory, report: report)
    case "bert-encoder":
        let roots = [URL(fileURLWithPath: FileManager.default.currentDirectoryPath),
                     URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath().deletingLastPathComponent()
                        .appendingPathComponent("../../..").standardized]
        guard let w = weights.map({ URL(fileURLWithPath: $0) }) ?? BertEncoderSelfCheck.defaultWeights(json, searchRoots: roots) else {
            throw SelfCheckError.missing("bert-encoder: no weights: pass --weights model.safetensors (scripts/setup unpacks MiniLM into vendor/minilm/)")
        }
        try BertEncoderSelfCheck.run(directory: directory, weights: w, report: report)
    case "pytorch-checkpoints":
        try PyTorchCheckpointSelfCheck.run(directory: directory, report: report)
    case "tokenizer":
        let (lines, passed) = try TokenizerSelfCheck.run(fixtureDirectory: directory)
        for l in lines { report.note(l) }
        report.record(name: "tokenizer (pre_caption, tokens, ids, batch ids/masks)", passed: passed)
    default:
        throw SelfCheckError.invalid("unknown fixture kind '\(kind)' (known: albef-pretrain-step, albef-retrieval-step, bert-encoder, pytorch-checkpoints, tokenizer)")
    }
}
