using System.Management.Automation;
using Microsandbox.Engine;

namespace Microsandbox.PowerShell;

/// <summary>
/// <para type="synopsis">Gets sandboxes by name or label.</para>
/// <para type="description">Lists the sandboxes of the current home ($env:MSB_HOME, else ~/.microsandbox), with their state checked against their runtime processes.</para>
/// </summary>
[Cmdlet(VerbsCommon.Get, "Sandbox", DefaultParameterSetName = "Name")]
[OutputType(typeof(Sandbox))]
public sealed class GetSandboxCommand : SandboxCmdlet
{
    /// <summary>
    /// <para type="description">Names of the sandboxes to get. Wildcards are allowed; omitted, all sandboxes are listed.</para>
    /// </summary>
    [Parameter(Position = 0, ParameterSetName = "Name", ValueFromPipeline = true, ValueFromPipelineByPropertyName = true)]
    [ValidateNotNullOrEmpty]
    [SupportsWildcards]
    [ArgumentCompleter(typeof(SandboxNameCompleter))]
    public string[]? Name { get; set; }

    /// <summary>
    /// <para type="description">Label selector: key=value or key terms; only sandboxes carrying all of them are returned.</para>
    /// </summary>
    [Parameter(Mandatory = true, ParameterSetName = "Label")]
    [ValidateNotNullOrEmpty]
    [ArgumentCompleter(typeof(SandboxLabelCompleter))]
    public string[] Label { get; set; } = [];

    /// <inheritdoc/>
    protected override void ProcessRecord()
    {
        try
        {
            IEnumerable<Sandbox> found = ParameterSetName == "Label"
                ? ResolveLabels(Label)
                : Name is null ? Engine.List() : ResolveNames(Name);
            foreach (Sandbox sandbox in found)
            {
                WriteObject(sandbox);
            }
        }
        catch (SandboxException ex)
        {
            ThrowSandboxError(ex);
        }
    }
}
