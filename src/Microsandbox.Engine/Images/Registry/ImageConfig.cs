using System.Text.Json;

namespace Microsandbox.Engine.Images.Registry;

/// <summary>
/// The parts of an image config (OCI or Docker) that shape a sandbox: its environment, working
/// folder, user, command and labels, and the uncompressed digests of its layers.
/// </summary>
public sealed record ImageConfig
{
    /// <summary>The operating system the image was built for.</summary>
    public string? Os { get; init; }

    /// <summary>The CPU architecture the image was built for.</summary>
    public string? Architecture { get; init; }

    /// <summary>The CPU variant, when the image names one.</summary>
    public string? Variant { get; init; }

    /// <summary>When the image was built, when it says.</summary>
    public DateTimeOffset? Created { get; init; }

    /// <summary>Environment variables as <c>NAME=value</c>, in image order.</summary>
    public IReadOnlyList<string> Env { get; init; } = [];

    /// <summary>The folder commands start in, or null for <c>/</c>.</summary>
    public string? WorkingDir { get; init; }

    /// <summary>The user commands run as (<c>name</c>, <c>uid</c>, <c>uid:gid</c>); null is root.</summary>
    public string? User { get; init; }

    /// <summary>The entrypoint, or null when the image has none.</summary>
    public IReadOnlyList<string>? Entrypoint { get; init; }

    /// <summary>The default command (the entrypoint's arguments when there is one).</summary>
    public IReadOnlyList<string>? Cmd { get; init; }

    /// <summary>The image's labels.</summary>
    public IReadOnlyDictionary<string, string> Labels { get; init; } = new Dictionary<string, string>();

    /// <summary>The signal that stops the image's process, when it names one.</summary>
    public string? StopSignal { get; init; }

    /// <summary>The digests of the uncompressed layers, bottom first (<c>rootfs.diff_ids</c>).</summary>
    public IReadOnlyList<string> DiffIds { get; init; } = [];

    /// <summary>Parses a config blob; <c>InvalidImageConfig</c> when it is not JSON of that shape.</summary>
    public static ImageConfig Parse(ReadOnlySpan<byte> json, object? target)
    {
        try
        {
            using JsonDocument document = JsonDocument.Parse(json.ToArray());
            JsonElement root = document.RootElement;
            if (root.ValueKind != JsonValueKind.Object)
            {
                throw Invalid("it is not a JSON object", target, null);
            }

            // Docker writes null for every empty field, so null and absent mean the same.
            JsonElement config = Object(Property(root, "config"));
            JsonElement rootfs = Object(Property(root, "rootfs"));
            return new ImageConfig
            {
                Os = String(root, "os"),
                Architecture = String(root, "architecture"),
                Variant = String(root, "variant"),
                Created = String(root, "created") is string created
                    && DateTimeOffset.TryParse(created, System.Globalization.CultureInfo.InvariantCulture,
                        System.Globalization.DateTimeStyles.AssumeUniversal, out DateTimeOffset when)
                    ? when : null,
                Env = Strings(config, "Env") ?? [],
                WorkingDir = NullIfEmpty(String(config, "WorkingDir")),
                User = NullIfEmpty(String(config, "User")),
                Entrypoint = Strings(config, "Entrypoint"),
                Cmd = Strings(config, "Cmd"),
                Labels = ReadLabels(config),
                StopSignal = NullIfEmpty(String(config, "StopSignal")),
                DiffIds = Strings(rootfs, "diff_ids") ?? [],
            };
        }
        catch (Exception e) when (e is JsonException or InvalidOperationException)
        {
            throw Invalid(e.Message, target, e);
        }
    }

    private static JsonElement Property(JsonElement element, string name) =>
        element.ValueKind == JsonValueKind.Object && element.TryGetProperty(name, out JsonElement value)
            ? value : default;

    private static JsonElement Object(JsonElement element) =>
        element.ValueKind == JsonValueKind.Object ? element : default;

    private static string? String(JsonElement element, string name) =>
        Property(element, name) is { ValueKind: JsonValueKind.String } value ? value.GetString() : null;

    private static List<string>? Strings(JsonElement element, string name) =>
        Property(element, name) is { ValueKind: JsonValueKind.Array } array
            ? [.. array.EnumerateArray().Select(item => item.GetString() ?? "")]
            : null;

    private static Dictionary<string, string> ReadLabels(JsonElement config)
    {
        var labels = new Dictionary<string, string>(StringComparer.Ordinal);
        if (Property(config, "Labels") is { ValueKind: JsonValueKind.Object } found)
        {
            foreach (JsonProperty label in found.EnumerateObject())
            {
                labels[label.Name] = label.Value.ValueKind == JsonValueKind.String
                    ? label.Value.GetString()!
                    : "";
            }
        }

        return labels;
    }

    private static string? NullIfEmpty(string? value) => string.IsNullOrEmpty(value) ? null : value;

    private static SandboxException Invalid(string why, object? target, Exception? inner) =>
        new("InvalidImageConfig", SandboxErrorKind.InvalidResult,
            $"The config of {target} is unusable: {why}.", target, inner);
}
