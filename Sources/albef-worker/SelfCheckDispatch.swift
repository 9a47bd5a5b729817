import ALBEF
import Foundation

/// Runs the selfcheck matching the fixture's `kind`.
func runFixture(directory: URL, weights: String?, report: SelfCheckReport) throws {
    let json = try readFixtureJSON(directory)
    let kind = json["kind"] as? String ?? "?"
    report.note("fixture \(directory.lastPathComponent): kind \(kind)")
    switch kind {
    case "albef-pretrain-step":
        try PretrainStepSelfCheck.run(directory: directory, report: report)
    default:
        throw SelfCheckError.invalid("unknown fixture kind '\(kind)' (known: albef-pretrain-step, bert-encoder, tokenizer)")
    }
}
