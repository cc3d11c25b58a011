namespace Microsandbox.Engine.Images.Layout;

/// <summary>
/// The failures of reading an image export, each with its stable id and the export's path as
/// target: what the user gave and must fix.
/// </summary>
internal static class LayoutErrors
{
    private const string ExportAgain =
        "The export is damaged or was altered; export the image again (skopeo copy, docker save).";

    /// <summary><c>ImageLayoutInvalid</c>: the export is not a layout or archive we can read.</summary>
    public static SandboxException Invalid(string path, string why, Exception? inner = null) =>
        new("ImageLayoutInvalid", SandboxErrorKind.InvalidData,
            $"'{path}' is not a usable OCI image layout or docker save archive: {why}.", path, inner)
        {
            Hint = "Give a folder or tar written by 'skopeo copy ... oci:DIR', 'oci-archive:FILE' or "
                + "'docker-archive:FILE', or by 'docker save'.",
        };

    /// <summary><c>ImageLayoutInvalid</c>: a file the export's own index names is not in it.</summary>
    public static SandboxException Missing(string path, string name) =>
        Invalid(path, $"it lacks '{name}'");

    /// <summary>
    /// <c>BlobDigestMismatch</c>, the id a pull gives bad content: a blob whose size or bytes are
    /// not those its descriptor names.
    /// </summary>
    public static SandboxException Mismatch(string path, string digest, string why, Exception? inner = null) =>
        new("BlobDigestMismatch", SandboxErrorKind.InvalidResult,
            $"The blob {digest} in '{path}' {why}; nothing of the image was cached.", path, inner)
        {
            Hint = ExportAgain,
        };

    /// <summary><c>ImageReferenceRequired</c>: the export names its image by no usable reference.</summary>
    public static SandboxException ReferenceRequired(string path, string why) =>
        new("ImageReferenceRequired", SandboxErrorKind.InvalidArgument,
            $"The image in '{path}' needs a reference to be recorded under: {why}.", path)
        {
            Hint = "Name it with -Reference, for example -Reference registry.example/team/app:1.0.",
        };

    /// <summary><c>ImageReferenceAmbiguous</c>: several images, and nothing says which one.</summary>
    public static SandboxException Ambiguous(string path, IEnumerable<string> names) =>
        new("ImageReferenceAmbiguous", SandboxErrorKind.InvalidArgument,
            $"'{path}' holds several images ({string.Join(", ", names)}); -Reference names none of them "
            + "alone.", path)
        {
            Hint = "Give -Reference with one of the names (a full reference, or repository:tag for a "
                + "layout that names its images by tag alone).",
        };
}
