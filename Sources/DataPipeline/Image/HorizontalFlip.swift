/// Mirrors an image left–right in place (torchvision `hflip`; `RandomHorizontalFlip(p=0.5)` flips
/// when one uniform draw is < 0.5).
public func flipHorizontally(_ image: inout RGBImage) {
    let w = image.width, h = image.height
    image.pixels.withUnsafeMutableBufferPointer { p in
        for y in 0..<h {
            var l = y * w * 3, r = (y * w + w - 1) * 3
            while l < r {
                for c in 0..<3 { let t = p[l + c]; p[l + c] = p[r + c]; p[r + c] = t }
                l += 3
                r -= 3
            }
        }
    }
}
