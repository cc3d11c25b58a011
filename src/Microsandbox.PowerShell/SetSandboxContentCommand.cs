using System.Collections;
using System.Management.Automation;
using System.Text;
using Microsandbox.Engine;

namespace Microsandbox.PowerShell;

/// <summary>
/// <para type="synopsis">Writes content to a file in a sandbox.</para>
/// <para type="description">Replaces the content of a guest file, or creates it with mode 0644: strings as UTF-8 lines ending in a line feed, or bytes as they are with -AsByteStream. Values piped to the cmdlet are gathered and written when the pipeline ends.</para>
/// </summary>
[Cmdlet(VerbsCommon.Set, "SandboxContent", SupportsShouldProcess = true)]
[OutputType(typeof(SandboxItem))]
public sealed class SetSandboxContentCommand : SandboxItemCmdlet
{
    private readonly MemoryStream _content = new();

    /// <summary>
    /// <para type="description">Absolute guest paths of the files to write. Their directories must exist.</para>
    /// </summary>
    [Parameter(Mandatory = true, Position = 0)]
    [ValidateNotNullOrEmpty]
    public string[] Path { get; set; } = [];

    /// <summary>
    /// <para type="description">The content: strings (or objects, as strings) written as lines, or bytes and byte arrays with -AsByteStream. Binds from the pipeline.</para>
    /// </summary>
    [Parameter(Mandatory = true, Position = 1, ValueFromPipeline = true)]
    [AllowNull]
    [AllowEmptyString]
    [AllowEmptyCollection]
    public object?[] Value { get; set; } = [];

    /// <summary>
    /// <para type="description">Write the values as bytes, exactly: bytes and byte arrays as they are.</para>
    /// </summary>
    [Parameter]
    public SwitchParameter AsByteStream { get; set; }

    /// <summary>
    /// <para type="description">Join the strings without line feeds, and end the file without one.</para>
    /// </summary>
    [Parameter]
    public SwitchParameter NoNewline { get; set; }

    /// <summary>
    /// <para type="description">Return the written file as an item object.</para>
    /// </summary>
    [Parameter]
    public SwitchParameter PassThru { get; set; }

    /// <inheritdoc/>
    protected override void ProcessRecord()
    {
        foreach (object? value in Value)
        {
            Append(value is PSObject wrapped ? wrapped.BaseObject : value);
        }
    }

    /// <inheritdoc/>
    protected override void EndProcessing() => ForEachPath(Path, path =>
    {
        if (!ShouldProcess(Describe(path), "Set content"))
        {
            return;
        }

        _content.Position = 0;
        SandboxItem item = Run((_, token) => Engine.WriteFileAsync(Name, path, _content, overwrite: true, token));
        if (PassThru)
        {
            WriteObject(item);
        }
    });

    private void Append(object? value)
    {
        switch (value)
        {
            case null:
                break;
            case byte b when AsByteStream:
                _content.WriteByte(b);
                break;
            case byte[] bytes when AsByteStream:
                _content.Write(bytes);
                break;
            case IEnumerable items when AsByteStream && value is not string:
                foreach (object? item in items)
                {
                    Append(item is PSObject wrapped ? wrapped.BaseObject : item);
                }

                break;
            case var _ when AsByteStream:
                _content.WriteByte(LanguagePrimitives.ConvertTo<byte>(value));
                break;
            default:
                string text = LanguagePrimitives.ConvertTo<string>(value) + (NoNewline ? "" : "\n");
                _content.Write(Encoding.UTF8.GetBytes(text));
                break;
        }
    }
}
