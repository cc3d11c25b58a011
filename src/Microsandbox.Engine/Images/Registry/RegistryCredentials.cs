using System.Text;
using System.Text.Json;

namespace Microsandbox.Engine.Images.Registry;

/// <summary>A user name and password (or token) for one registry.</summary>
/// <param name="Username">The user name.</param>
/// <param name="Password">The password or personal access token.</param>
public sealed record RegistryCredential(string Username, string Password)
{
    /// <summary>The user name only: a credential must not reach a log through its text.</summary>
    public override string ToString() => $"{Username} (password hidden)";
}

/// <summary>
/// Registry credentials as <c>docker login</c> writes them: the <c>auths</c> map of the Docker config
/// file, keyed by registry host, each with a base64 <c>user:password</c> <c>auth</c> or separate
/// <c>username</c> and <c>password</c>.
/// </summary>
/// <remarks>
/// Credential helpers (<c>credsStore</c>, <c>credHelpers</c>) and <c>identitytoken</c> are not read:
/// registries whose login lives only in a helper are pulled anonymously and refuse private images.
/// </remarks>
public sealed class RegistryCredentials
{
    private readonly Dictionary<string, RegistryCredential> _byRegistry;

    private RegistryCredentials(Dictionary<string, RegistryCredential> byRegistry, string? source)
    {
        _byRegistry = byRegistry;
        Source = source;
    }

    /// <summary>No credentials: every registry is used anonymously.</summary>
    public static RegistryCredentials None { get; } = new(new(StringComparer.OrdinalIgnoreCase), null);

    /// <summary>The file the credentials were read from, if any.</summary>
    public string? Source { get; }

    /// <summary>
    /// The Docker config file: <c>$DOCKER_CONFIG/config.json</c>, else <c>~/.docker/config.json</c>.
    /// </summary>
    public static string DefaultConfigPath()
    {
        string? folder = Environment.GetEnvironmentVariable("DOCKER_CONFIG");
        if (string.IsNullOrEmpty(folder))
        {
            folder = Path.Join(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".docker");
        }

        return Path.Join(folder, "config.json");
    }

    /// <summary>Reads the default Docker config file; no file means no credentials.</summary>
    public static RegistryCredentials FromDockerConfig() => FromDockerConfig(DefaultConfigPath());

    /// <summary>
    /// Reads the Docker config file at <paramref name="path"/>; no file means no credentials, and a
    /// file that is not a Docker config fails with <c>InvalidDockerConfig</c>.
    /// </summary>
    public static RegistryCredentials FromDockerConfig(string path)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        byte[] json;
        try
        {
            json = File.ReadAllBytes(path);
        }
        catch (Exception e) when (e is FileNotFoundException or DirectoryNotFoundException)
        {
            return None;
        }

        var found = new Dictionary<string, RegistryCredential>(StringComparer.OrdinalIgnoreCase);
        try
        {
            // Files saved by Windows tools often start with a UTF-8 byte order mark.
            ReadOnlyMemory<byte> text = json.AsMemory();
            if (text.Span.StartsWith("\uFEFF"u8))
            {
                text = text[3..];
            }

            using JsonDocument document = JsonDocument.Parse(text);
            if (document.RootElement.ValueKind == JsonValueKind.Object
                && document.RootElement.TryGetProperty("auths", out JsonElement auths)
                && auths.ValueKind == JsonValueKind.Object)
            {
                foreach (JsonProperty entry in auths.EnumerateObject())
                {
                    RegistryCredential? credential = ReadEntry(entry.Value);
                    if (credential is not null)
                    {
                        found[NormalizeKey(entry.Name)] = credential;
                    }
                }
            }
        }
        catch (Exception e) when (e is JsonException or FormatException or InvalidOperationException)
        {
            throw new SandboxException("InvalidDockerConfig", SandboxErrorKind.InvalidArgument,
                $"The Docker config file '{path}' cannot be read: {e.Message}", path, e);
        }

        return new RegistryCredentials(found, path);
    }

    /// <summary>Credentials for exactly these registries, keyed as in an image reference.</summary>
    public static RegistryCredentials From(IReadOnlyDictionary<string, RegistryCredential> byRegistry)
    {
        ArgumentNullException.ThrowIfNull(byRegistry);
        var found = new Dictionary<string, RegistryCredential>(StringComparer.OrdinalIgnoreCase);
        foreach (var (registry, credential) in byRegistry)
        {
            found[NormalizeKey(registry)] = credential;
        }

        return new RegistryCredentials(found, null);
    }

    /// <summary>
    /// The credential for <paramref name="registry"/>, named as in a reference (<c>docker.io</c>,
    /// <c>host:5000</c>).
    /// </summary>
    public RegistryCredential? Find(string registry)
    {
        ArgumentNullException.ThrowIfNull(registry);
        return _byRegistry.GetValueOrDefault(NormalizeKey(registry));
    }

    private static RegistryCredential? ReadEntry(JsonElement entry)
    {
        if (entry.ValueKind != JsonValueKind.Object)
        {
            return null;
        }

        if (entry.TryGetProperty("auth", out JsonElement auth) && auth.ValueKind == JsonValueKind.String
            && !string.IsNullOrEmpty(auth.GetString()))
        {
            string pair = Encoding.UTF8.GetString(Convert.FromBase64String(auth.GetString()!));
            int colon = pair.IndexOf(':', StringComparison.Ordinal);
            if (colon < 0)
            {
                throw new FormatException("an 'auth' value does not decode to user:password");
            }

            return new RegistryCredential(pair[..colon], pair[(colon + 1)..]);
        }

        string? username = Text(entry, "username");
        string? password = Text(entry, "password");
        return string.IsNullOrEmpty(username) || password is null
            ? null
            : new RegistryCredential(username, password);
    }

    private static string? Text(JsonElement entry, string name) =>
        entry.TryGetProperty(name, out JsonElement value) && value.ValueKind == JsonValueKind.String
            ? value.GetString()
            : null;

    /// <summary>
    /// The registry a config key names: keys may carry a scheme and a path
    /// (<c>https://index.docker.io/v1/</c>), and Docker Hub goes by several host names.
    /// </summary>
    private static string NormalizeKey(string key)
    {
        string host = key.Trim();
        int scheme = host.IndexOf("://", StringComparison.Ordinal);
        if (scheme >= 0)
        {
            host = host[(scheme + 3)..];
        }

        int slash = host.IndexOf('/', StringComparison.Ordinal);
        if (slash >= 0)
        {
            host = host[..slash];
        }

        host = host.ToLowerInvariant();
        return host is "index.docker.io" or ImageReference.DockerHubApiHost ? ImageReference.DockerHub : host;
    }
}
