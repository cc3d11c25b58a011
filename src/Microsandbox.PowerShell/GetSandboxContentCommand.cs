using System.Management.Automation;
using System.Text;
using Microsandbox.Engine;

namespace Microsandbox.PowerShell;

/// <summary>
/// <para type="synopsis">Gets the content of a file in a sandbox.</para>
/// <para type="description">Reads a guest file and writes its lines (UTF-8) to the pipeline, or the whole text with -Raw, or its bytes with -AsByteStream.</para>
/// </summary>
[Cmdlet(VerbsCommon.Get, "SandboxContent")]
[OutputType(typeof(string), typeof(byte), typeof(byte[]))]
public sealed class GetSandboxContentCommand : SandboxItemCmdlet
{
    /// <summary>
    /// <para type="description">Absolute guest paths of the files to read. A link is followed.</para>
    /// </summary>
    [Parameter(Mandatory = true, Position = 0)]
    [ValidateNotNullOrEmpty]
    public string[] Path { get; set; } = [];

    /// <summary>
    /// <para type="description">Write bytes instead of text: one byte at a time, or one byte array with -Raw.</para>
    /// </summary>
    [Parameter]
    public SwitchParameter AsByteStream { get; set; }

    /// <summary>
    /// <para type="description">Write the whole content as one string (or one byte array with -AsByteStream), line breaks kept.</para>
    /// </summary>
    [Parameter]
    public SwitchParameter Raw { get; set; }

    /// <summary>
    /// <para type="description">Write only the last this many lines (bytes with -AsByteStream).</para>
    /// </summary>
    [Parameter]
    [ValidateRange(0, int.MaxValue)]
    public int Tail { get; set; } = -1;

    /// <inheritdoc/>
    protected override void ProcessRecord() => ForEachPath(Path, path =>
    {
        using var content = new MemoryStream();
        Run((_, token) => Engine.ReadFileAsync(Name, path, content, token));
        byte[] bytes = content.ToArray();
        if (AsByteStream)
        {
            byte[] kept = Tail >= 0 && Tail < bytes.Length ? bytes[^Tail..] : bytes;
            WriteObject(kept, enumerateCollection: !Raw);
            return;
        }

        // As Get-Content: a byte order mark is not text, and the last line break ends a line
        // rather than starting an empty one.
        string text = new UTF8Encoding(false).GetString(bytes).TrimStart('\uFEFF');
        List<string> lines = [.. text.Split('\n').Select(line => line.TrimEnd('\r'))];
        if (text.EndsWith('\n'))
        {
            lines.RemoveAt(lines.Count - 1);
        }

        if (Tail >= 0 && Tail < lines.Count)
        {
            lines = lines[^Tail..];
            text = string.Join('\n', lines) + (Tail > 0 && text.EndsWith('\n') ? "\n" : "");
        }

        if (Raw)
        {
            WriteObject(text);
            return;
        }

        WriteObject(lines, enumerateCollection: true);
    });
}
