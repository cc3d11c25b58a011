using System.Management.Automation;
using System.Text;
using Microsandbox.Engine;

namespace Microsandbox.PowerShell;

/// <summary>
/// <para type="synopsis">Creates a file, directory or link in a sandbox.</para>
/// <para type="description">Creates a guest file (with -Value as its content, exactly), a directory, or a symbolic link to -Value, and returns it. An existing item is an error unless -Force is given, which also creates missing parent directories.</para>
/// </summary>
[Cmdlet(VerbsCommon.New, "SandboxItem", SupportsShouldProcess = true)]
[OutputType(typeof(SandboxItem))]
public sealed class NewSandboxItemCommand : SandboxItemCmdlet
{
    /// <summary>
    /// <para type="description">Absolute guest paths of the items to create.</para>
    /// </summary>
    [Parameter(Mandatory = true, Position = 0)]
    [ValidateNotNullOrEmpty]
    public string[] Path { get; set; } = [];

    /// <summary>
    /// <para type="description">File (the default), Directory or SymbolicLink.</para>
    /// </summary>
    [Parameter]
    [ValidateSet("File", "Directory", "SymbolicLink")]
    public SandboxItemType ItemType { get; set; } = SandboxItemType.File;

    /// <summary>
    /// <para type="description">The content of a new file, written as UTF-8 without a line feed added; or the target of a link.</para>
    /// </summary>
    [Parameter]
    public string? Value { get; set; }

    /// <summary>
    /// <para type="description">Replace an existing file or link, accept an existing directory, and create missing parent directories.</para>
    /// </summary>
    [Parameter]
    public SwitchParameter Force { get; set; }

    /// <inheritdoc/>
    protected override void ProcessRecord() => ForEachPath(Path, path =>
    {
        if (!ShouldProcess(Describe(path), $"Create {ItemType}"))
        {
            return;
        }

        WriteObject(Run(async (_, token) =>
        {
            if (ItemType == SandboxItemType.Directory)
            {
                return await Engine.CreateDirectoryAsync(Name, path, Force, token).ConfigureAwait(false);
            }

            int slash = path.TrimEnd('/').LastIndexOf('/');
            if (Force && slash > 0)
            {
                await Engine.CreateDirectoryAsync(Name, path[..slash], force: true, token).ConfigureAwait(false);
            }

            if (ItemType == SandboxItemType.SymbolicLink)
            {
                return await Engine.CreateSymbolicLinkAsync(Name, path, Value ?? "", Force, token)
                    .ConfigureAwait(false);
            }

            using var content = new MemoryStream(Encoding.UTF8.GetBytes(Value ?? ""));
            return await Engine.WriteFileAsync(Name, path, content, overwrite: Force, token).ConfigureAwait(false);
        }));
    });
}
