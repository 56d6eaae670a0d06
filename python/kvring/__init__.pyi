from ._kvring import MAX_KEY as MAX_KEY
from ._kvring import MAX_SGE as MAX_SGE
from ._kvring import Batch as Batch
from ._kvring import Connector as Connector
from ._kvring import Engine as Engine
from ._kvring import Error as Error
from ._kvring import Region as Region
from ._kvring import Target as Target
from ._kvring import __version__ as __version__
from ._kvring import parse_size as parse_size
from ._kvring import strerror as strerror

def errno_name(result: int) -> str: ...
