using System.Text.Json;

namespace Microsandbox.Engine;

/// <summary>
/// The scripts and patches of a sandbox created without starting, kept in its folder until a first
/// start has put them in place. Host sources of copy patches are kept as full paths, so a start from
/// another folder copies the same files.
/// </summary>
internal sealed record PendingSetup(Dictionary<string, string> Scripts, List<SandboxPatch> Patches)
{
    /// <summary>The setup that <paramref name="options"/> asks for.</summary>
    public static PendingSetup From(SandboxOptions options) => new(
        new Dictionary<string, string>(options.Scripts, StringComparer.Ordinal),
        options.Patches
            .Select(p => p.Source is { } source ? p with { Source = Path.GetFullPath(source) } : p)
            .ToList());

    /// <summary>Writes the setup through a rename, so a reader never sees half of it.</summary>
    public static void Save(PendingSetup setup, string path)
    {
        string temp = path + ".tmp";
        File.WriteAllBytes(temp, JsonSerializer.SerializeToUtf8Bytes(setup));
        File.Move(temp, path, overwrite: true);
    }

    /// <summary>
    /// Reads the setup still to come, or null when there is none; a file that cannot be read as one
    /// is <c>SetupFileCorrupt</c>.
    /// </summary>
    public static PendingSetup? Load(string path, string sandboxName)
    {
        if (!File.Exists(path))
        {
            return null;
        }

        try
        {
            return JsonSerializer.Deserialize<PendingSetup>(File.ReadAllBytes(path))
                ?? throw new JsonException("The file holds null.");
        }
        catch (JsonException ex)
        {
            throw new SandboxException("SetupFileCorrupt", SandboxErrorKind.InvalidData,
                $"The scripts and patches kept for the first start of sandbox '{sandboxName}' ({path}) "
                + $"cannot be read: {ex.Message} Remove the sandbox and create it again.", path, ex);
        }
    }
}
