using Microsandbox.Engine.Images.Cache;
using Microsandbox.Engine.Images.Erofs;
using Microsandbox.Engine.Images.Registry;

namespace Microsandbox.Engine;

/// <summary>When New-Sandbox goes to the registry for an image.</summary>
public enum PullPolicy
{
    /// <summary>Pull only when the image is not in the cache (the default).</summary>
    IfMissing,

    /// <summary>Always ask the registry, so a moved tag is followed.</summary>
    Always,

    /// <summary>Never pull: the image must be in the cache already.</summary>
    Never,
}

/// <summary>An image ready to be a sandbox root: its EROFS base and its config.</summary>
/// <param name="Reference">The canonical reference, or <c>default</c>.</param>
/// <param name="BasePath">The read-only EROFS image every sandbox of this image shares.</param>
/// <param name="Config">The image config; null for the built-in image.</param>
internal sealed record SandboxImage(string Reference, string BasePath, ImageConfig? Config);

/// <summary>
/// Turns an image name into a sandbox base: the built-in image from the module's layer tar, an OCI
/// image from its registry through the layer cache. Each base is built once, named by the layer
/// tar's or the manifest's digest, so every sandbox of one image shares one file.
/// </summary>
internal sealed class ImageStore(SandboxHome home, GuestAssets assets)
{
    public async Task<SandboxImage> ResolveAsync(
        string image, PullPolicy policy, IProgress<SandboxMessage>? progress, CancellationToken cancellationToken)
    {
        if (image == SandboxOptions.DefaultImage)
        {
            string path = await RootDisks.DefaultImageAsync(home, assets, progress, cancellationToken)
                .ConfigureAwait(false);
            return new SandboxImage(image, path, null);
        }

        ImageReference reference = ImageReference.Parse(image);
        var cache = LayerCache.ForHome(home);
        PulledImage? pulled = policy == PullPolicy.Always
            ? null
            : await PulledImage.LoadAsync(cache, reference, cancellationToken).ConfigureAwait(false);
        if (pulled is null && policy == PullPolicy.Never)
        {
            throw new SandboxException("ImageNotFound", SandboxErrorKind.NotFound,
                $"The image {reference} is not in the cache, and the pull policy is Never.", image);
        }

        if (pulled is null)
        {
            progress?.Report(new(SandboxMessageLevel.Verbose, $"Pulling {reference}."));
            using var client = new RegistryClient();
            var layers = new Progress<LayerProgress>(p =>
            {
                if (p.BytesDone == p.BytesTotal)
                {
                    progress?.Report(new(SandboxMessageLevel.Verbose, $"Layer {p.Digest[..19]} ({p.BytesTotal} bytes) done."));
                }
            });
            pulled = await client.PullAsync(reference, cache, null, layers, cancellationToken).ConfigureAwait(false);
        }

        string images = Path.Join(home.CacheDirectory, "images");
        SandboxHome.CreatePrivateDirectory(images);
        string basePath = Path.Join(images, ContentDigest.Hex(pulled.ManifestDigest) + ".erofs");
        if (!File.Exists(basePath))
        {
            progress?.Report(new(SandboxMessageLevel.Verbose,
                $"Building the EROFS base of {reference} from {pulled.Manifest.Layers.Count} layer(s)."));
            IReadOnlyList<string> dropped = await new ErofsImageBuilder()
                .WriteFromLayersAsync(OpenLayers(cache, pulled), basePath, null, cancellationToken)
                .ConfigureAwait(false);
            foreach (string xattr in dropped)
            {
                progress?.Report(new(SandboxMessageLevel.Warning, $"Image {reference}: dropped {xattr}."));
            }
        }

        return new SandboxImage(reference.ToString(), basePath, pulled.Config);
    }

    // One layer open at a time: each stream is disposed when the builder asks for the next.
    private static IEnumerable<Stream> OpenLayers(LayerCache cache, PulledImage image)
    {
        foreach (OciDescriptor layer in image.Manifest.Layers)
        {
            using Stream tar = LayerTar.Open(cache, layer.Digest, layer.MediaType);
            yield return tar;
        }
    }
}
