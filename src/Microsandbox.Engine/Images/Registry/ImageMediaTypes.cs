namespace Microsandbox.Engine.Images.Registry;

/// <summary>The media types of the OCI image spec and of Docker's image format v2, schema 2.</summary>
public static class ImageMediaTypes
{
    /// <summary>An OCI image manifest.</summary>
    public const string OciManifest = "application/vnd.oci.image.manifest.v1+json";

    /// <summary>An OCI image index (a multi-platform image).</summary>
    public const string OciIndex = "application/vnd.oci.image.index.v1+json";

    /// <summary>A Docker v2 schema 2 manifest.</summary>
    public const string DockerManifest = "application/vnd.docker.distribution.manifest.v2+json";

    /// <summary>A Docker manifest list (a multi-platform image).</summary>
    public const string DockerManifestList = "application/vnd.docker.distribution.manifest.list.v2+json";

    /// <summary>An OCI image config.</summary>
    public const string OciConfig = "application/vnd.oci.image.config.v1+json";

    /// <summary>A Docker image config.</summary>
    public const string DockerConfig = "application/vnd.docker.container.image.v1+json";

    /// <summary>An uncompressed OCI layer.</summary>
    public const string OciLayer = "application/vnd.oci.image.layer.v1.tar";

    /// <summary>A gzip-compressed OCI layer.</summary>
    public const string OciLayerGzip = "application/vnd.oci.image.layer.v1.tar+gzip";

    /// <summary>A zstd-compressed OCI layer.</summary>
    public const string OciLayerZstd = "application/vnd.oci.image.layer.v1.tar+zstd";

    /// <summary>A gzip-compressed Docker layer.</summary>
    public const string DockerLayerGzip = "application/vnd.docker.image.rootfs.diff.tar.gzip";

    /// <summary>What manifest requests accept: every manifest and index type we read.</summary>
    public static readonly IReadOnlyList<string> AcceptedManifests =
        [OciManifest, OciIndex, DockerManifest, DockerManifestList];

    /// <summary>Whether the type is an index of manifests for several platforms.</summary>
    public static bool IsIndex(string? mediaType) => mediaType is OciIndex or DockerManifestList;

    /// <summary>Whether the type is a single image manifest.</summary>
    public static bool IsManifest(string? mediaType) => mediaType is OciManifest or DockerManifest;
}
