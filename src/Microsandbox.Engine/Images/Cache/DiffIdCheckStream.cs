using System.Security.Cryptography;

namespace Microsandbox.Engine.Images.Cache;

/// <summary>
/// Reads a layer's uncompressed tar and, when it has been read to its end, checks it against the
/// layer's diff_id from the image config. The blob's own digest says the compressed bytes are the
/// ones the manifest names; this says they unpack to the tar the image was built from, which a
/// decompressor that stops early (a gzip stream without its trailer) would not catch. Takes
/// ownership of the tar stream.
/// </summary>
internal sealed class DiffIdCheckStream(Stream tar, string diffId, string layer) : ObservedReadStream(tar)
{
    private readonly IncrementalHash _hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
    private bool _checked;

    protected override void Dispose(bool disposing)
    {
        if (disposing)
        {
            Inner.Dispose();
            _hash.Dispose();
        }

        base.Dispose(disposing);
    }

    // Hashes what was read; at the end the digest is checked, once.
    protected override void Observe(int asked, ReadOnlySpan<byte> read)
    {
        _hash.AppendData(read);
        if (read.Length > 0 || asked == 0 || _checked)
        {
            return;
        }

        _checked = true;
        string actual = ContentDigest.FromHash(_hash.GetHashAndReset());
        if (actual != diffId)
        {
            // Corrupt as a tar that does not parse is: the layer is not what the image was built from.
            throw new SandboxException("LayerCorrupt", SandboxErrorKind.InvalidArgument,
                $"The layer {layer} unpacks to a tar of digest {actual}, not the diff_id {diffId} "
                + "its image config names; the image was refused.", layer)
            {
                Hint = "The layer or the image config was altered, cut short or built wrongly. Rebuild or "
                    + "push the image again.",
            };
        }
    }
}
