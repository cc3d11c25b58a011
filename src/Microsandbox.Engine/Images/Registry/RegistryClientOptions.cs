namespace Microsandbox.Engine.Images.Registry;

/// <summary>How a <see cref="RegistryClient"/> reaches registries and authenticates to them.</summary>
public sealed class RegistryClientOptions
{
    /// <summary>
    /// Credentials by registry; null reads the Docker config file (<c>$DOCKER_CONFIG/config.json</c>
    /// or <c>~/.docker/config.json</c>) when the client is created.
    /// </summary>
    public RegistryCredentials? Credentials { get; init; }

    /// <summary>
    /// Registries (<c>host</c> or <c>host:port</c>, as in references) spoken to over plain HTTP.
    /// Loopback registries (<c>localhost</c>, 127.0.0.0/8, ::1) always are.
    /// </summary>
    public IReadOnlyCollection<string> InsecureRegistries { get; init; } = [];

    /// <summary>The platform to choose from multi-platform images; null is the host's.</summary>
    public ImagePlatform? Platform { get; init; }

    /// <summary>How many layers download at once.</summary>
    public int MaxParallelDownloads { get; init; } = 3;

    /// <summary>How long to wait for a TCP (and TLS) connection.</summary>
    public TimeSpan ConnectTimeout { get; init; } = TimeSpan.FromSeconds(15);

    /// <summary>How long a request other than a blob download may take in all.</summary>
    public TimeSpan RequestTimeout { get; init; } = TimeSpan.FromSeconds(60);

    /// <summary>How long a blob download may receive nothing before it counts as interrupted.</summary>
    public TimeSpan ReadIdleTimeout { get; init; } = TimeSpan.FromSeconds(60);

    /// <summary>How often an interrupted blob download is resumed before the pull gives up.</summary>
    public int DownloadAttempts { get; init; } = 3;

    /// <summary>
    /// The HTTP handler to send through, or null for the client's own. A caller's handler stays
    /// the caller's: it is not disposed with the client.
    /// </summary>
    public HttpMessageHandler? Handler { get; init; }
}
