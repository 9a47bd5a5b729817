import NN
import Tensor

/// Patch embedding: a Conv2d with kernel = stride = patch size, as timm's `PatchEmbed`.
/// Keys: `proj.weight` `[C, 3, p, p]`, `proj.bias` `[C]`. Implemented as patchify + one GEMM.
public final class PatchEmbed: Module {
    public final class Conv: Module {
        public let weight: Tensor, bias: Tensor
        init(_ c: Int, _ inC: Int, _ p: Int) {
            weight = Tensor(zeros: [c, inC, p, p], requiresGrad: true)
            bias = Tensor(zeros: [c], requiresGrad: true)
        }
        public override var localParameters: [(String, Tensor)] { [("weight", weight), ("bias", bias)] }
    }
    public let proj: Conv
    public let patchSize: Int, width: Int

    public init(patchSize: Int, width: Int, inChannels: Int = 3) {
        self.patchSize = patchSize
        self.width = width
        proj = Conv(width, inChannels, patchSize)
    }
    public override var children: [(String, Module)] { [("proj", proj)] }

    /// images `[B, 3, H, W]` → `[B, (H/p)·(W/p), C]`, patches row-major over the grid
    /// (conv output flattened as `x.flatten(2).transpose(1, 2)`).
    public func callAsFunction(_ images: Tensor) -> Tensor {
        let cols = patchify(images, patchSize: patchSize)
        let w = proj.weight.reshaped([width, proj.weight.count / width])
        return cols.linear(w, proj.bias)
    }
}

/// `[B, C, H, W]` → `[B, gh·gw, C·p·p]` with each patch vector in (channel, row, column) order,
/// the layout of a conv weight `[out, C, p, p]` flattened. Differentiable (scatter back).
public func patchify(_ x: Tensor, patchSize p: Int) -> Tensor {
    precondition(x.rank == 4, "patchify: images must be [B, C, H, W], got \(x.shape)")
    let b = x.shape[0], c = x.shape[1], h = x.shape[2], w = x.shape[3]
    precondition(h % p == 0 && w % p == 0, "patchify: image \(h)×\(w) is not a multiple of patch \(p)")
    let gh = h / p, gw = w / p, d = c * p * p
    let out = Tensor(uninitialized: [b, gh * gw, d])
    func walk(_ body: (Int, Int) -> Void) {
        for bi in 0..<b { for gy in 0..<gh { for gx in 0..<gw {
            let o = ((bi * gh + gy) * gw + gx) * d
            for ci in 0..<c { for ky in 0..<p {
                let src = ((bi * c + ci) * h + gy * p + ky) * w + gx * p
                let dst = o + (ci * p + ky) * p
                for kx in 0..<p { body(dst + kx, src + kx) }
            } }
        } } }
    }
    let xd = x.data, od = out.data
    walk { od[$0] = xd[$1] }
    if x.requiresGrad && GradMode.isEnabled {
        return out.recordingPatchifyBackward(x, walk: walk)
    }
    return out
}

extension Tensor {
    func recordingPatchifyBackward(_ x: Tensor, walk: @escaping ((Int, Int) -> Void) -> Void) -> Tensor {
        let inputs = [x]
        let fn: (Tensor) -> Void = { o in
            let g = o.gradPointer, d = x.gradPointer
            walk { d[$1] += g[$0] }
        }
        recordExternal(inputs, fn)
        return self
    }
}

/// timm `Attention` with a fused qkv Linear. Keys: `qkv`, `proj`.
public final class ViTAttention: Module {
    public let qkv: Linear, proj: Linear
    public let heads: Int
    public init(width: Int, heads: Int) {
        qkv = Linear(width, 3 * width)
        proj = Linear(width, width)
        self.heads = heads
    }
    public override var children: [(String, Module)] { [("qkv", qkv), ("proj", proj)] }
    public func callAsFunction(_ x: Tensor) -> Tensor {
        let d = x.shape[2] / heads
        let ctx = Tensor.attention(packedQKV: qkv(x), heads: heads, scale: 1 / Float(d).squareRoot())
        return proj(ctx)
    }
}

/// timm `Mlp`: fc1 → GELU → fc2. Keys `fc1`, `fc2`.
public final class ViTMlp: Module {
    public let fc1: Linear, fc2: Linear
    public init(width: Int, hidden: Int) {
        fc1 = Linear(width, hidden)
        fc2 = Linear(hidden, width)
    }
    public override var children: [(String, Module)] { [("fc1", fc1), ("fc2", fc2)] }
    /// fc2(GELU(fc1 x)), the GELU output recomputed in the backward instead of kept.
    public func callAsFunction(_ x: Tensor) -> Tensor { fc1(x).geluLinear(fc2.weight, fc2.bias) }
}

/// Pre-LN transformer block: x ← x + Attn(LN1 x); x ← x + MLP(LN2 x). Keys `norm1 attn norm2 mlp`.
public final class ViTBlock: Module {
    public let norm1: LayerNorm, attn: ViTAttention, norm2: LayerNorm, mlp: ViTMlp
    public init(width: Int, heads: Int, mlpHidden: Int, eps: Float) {
        norm1 = LayerNorm(width, eps: eps)
        attn = ViTAttention(width: width, heads: heads)
        norm2 = LayerNorm(width, eps: eps)
        mlp = ViTMlp(width: width, hidden: mlpHidden)
    }
    public override var children: [(String, Module)] { [("norm1", norm1), ("attn", attn), ("norm2", norm2), ("mlp", mlp)] }
    /// Fused so that only what a backward reads is kept: LN outputs, the attention
    /// probabilities, the sublayer outputs and the GELU output are recomputed or never stored
    /// (`layerNormLinear`, `attention`, `addingLinear`); the arithmetic is the separate ops'.
    public func callAsFunction(_ x: Tensor) -> Tensor {
        let d = x.shape[2] / attn.heads
        let qkv = x.layerNormLinear(norm1.weight, norm1.bias, eps: norm1.eps, attn.qkv.weight, attn.qkv.bias)
        let ctx = Tensor.attention(packedQKV: consume qkv, heads: attn.heads, scale: 1 / Float(d).squareRoot())
        let h = x.addingLinear(consume ctx, attn.proj.weight, attn.proj.bias)
        let pre = h.layerNormLinear(norm2.weight, norm2.bias, eps: norm2.eps, mlp.fc1.weight, mlp.fc1.bias)
        return h.addingLinear(pre, mlp.fc2.weight, mlp.fc2.bias, gelu: true)
    }
}

/// ALBEF's `VisionTransformer` (timm ViT without head): patch embed, CLS token, position
/// embedding, pre-LN blocks, final norm over every token. Output `[B, 1 + N, C]`.
/// Keys: `cls_token (1,1,C)`, `pos_embed (1,N+1,C)`, `patch_embed.proj.*`, `blocks.i.*`, `norm.*`.
public final class VisionTransformer: Module {
    public let clsToken: Tensor, posEmbed: Tensor
    public let patchEmbed: PatchEmbed
    public let blocks: ModuleList<ViTBlock>
    public let norm: LayerNorm
    public let width: Int, patchSize: Int, imageSize: Int

    public init(imageSize: Int, patchSize: Int, width: Int, depth: Int, heads: Int, mlpRatio: Float, eps: Float = 1e-6) {
        self.width = width
        self.patchSize = patchSize
        self.imageSize = imageSize
        let n = (imageSize / patchSize) * (imageSize / patchSize)
        clsToken = Tensor(zeros: [1, 1, width], requiresGrad: true)
        posEmbed = Tensor(zeros: [1, n + 1, width], requiresGrad: true)
        patchEmbed = PatchEmbed(patchSize: patchSize, width: width)
        blocks = ModuleList((0..<depth).map { _ in ViTBlock(width: width, heads: heads, mlpHidden: Int(Float(width) * mlpRatio), eps: eps) })
        norm = LayerNorm(width, eps: eps)
    }

    public override var localParameters: [(String, Tensor)] { [("cls_token", clsToken), ("pos_embed", posEmbed)] }
    public override var children: [(String, Module)] { [("patch_embed", patchEmbed), ("blocks", blocks), ("norm", norm)] }

    public func callAsFunction(_ images: Tensor) -> Tensor {
        let b = images.shape[0]
        let x = patchEmbed(images)
        let cls = clsToken.reshaped([1, width]).gatherRows(Array(repeating: 0, count: b)).reshaped([b, 1, width])
        var h = Tensor.concat([cls, x], axis: 1) + posEmbed
        for blk in blocks.items { h = blk(h) }
        return norm(h)
    }

    /// timm/ALBEF init: trunc-normal(0.02) for pos_embed, cls_token and Linear weights, zero
    /// biases, unit LayerNorms; the patch conv keeps PyTorch's default (kaiming-uniform) init.
    public func initialize(rng: inout RandomGenerator) {
        fillTruncNormal(posEmbed, std: 0.02, rng: &rng)
        fillTruncNormal(clsToken, std: 0.02, rng: &rng)
        let fanIn = proj.weight.count / width
        let bound = 1 / Float(fanIn).squareRoot()
        for i in 0..<proj.weight.count { proj.weight.data[i] = rng.uniform(-bound, bound) }
        for i in 0..<proj.bias.count { proj.bias.data[i] = rng.uniform(-bound, bound) }
        for blk in blocks.items {
            for l in [blk.attn.qkv, blk.attn.proj, blk.mlp.fc1, blk.mlp.fc2] { l.initTruncNormal(std: 0.02, rng: &rng) }
        }
    }

    var proj: PatchEmbed.Conv { patchEmbed.proj }
}
